"""`rounds: 2` run as a Prefect flow: round 2's stages (the control's own chain too) run as tasks, its
version names round 1's checkpoint."""

from __future__ import annotations

import pytest

from tests.stages.test_rounds import _recipe


@pytest.mark.slow
def test_two_rounds_as_a_flow_are_linked_and_evaluated(tmp_path, tiny_chat, tiny_rm):
    from curation.catalog import open_catalog
    from curation.flows.pipeline import run_flow

    summary = run_flow(str(_recipe(tmp_path, tiny_chat, tiny_rm)), str(tmp_path / "catalog"))
    stages = [((s.get("detail") or {}).get("round"), s["stage"], (s.get("detail") or {}).get("chain")) for s in summary["stages"]]
    assert [(s, c) for r, s, c in stages if r == 2] == [
        ("generate", None), ("score", None), ("pairs", None), ("select", None), ("publish", None),
        ("generate", "control"), ("score", "control"), ("pairs", "control"), ("train", None), ("evaluate", None)]
    by_round = {(r, s): x for (r, s, c), x in zip(stages, summary["stages"]) if c is None}
    catalog = open_catalog(tmp_path / "catalog")
    v1, v2 = by_round[1, "publish"]["detail"]["version"], by_round[2, "publish"]["detail"]["version"]
    assert summary["version"] == v2 == "rounds@v2"
    assert catalog.generated_by(v1) == str(tiny_chat.resolve())
    assert catalog.generated_by(v2) == f"model:{by_round[1, 'train']['detail']['model_id']}"
    for k in (1, 2):  # each round's evaluation is in the summary, with its interval
        iv = by_round[k, "evaluate"]["detail"]["intervals"]["after_vs_control"]
        assert iv["low"] <= iv["mean"] <= iv["high"]
