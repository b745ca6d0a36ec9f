"""`rounds: 2` run as a Prefect flow: round 2's stages run as tasks, its version names round 1's checkpoint."""

from __future__ import annotations

import pytest

from tests.stages.test_rounds import _recipe


@pytest.mark.slow
def test_two_rounds_as_a_flow_are_linked_and_evaluated(tmp_path, tiny_chat, tiny_rm):
    from curation.catalog import open_catalog
    from curation.flows.pipeline import run_flow

    summary = run_flow(str(_recipe(tmp_path, tiny_chat, tiny_rm)), str(tmp_path / "catalog"))
    stages = [((s.get("detail") or {}).get("round"), s["stage"]) for s in summary["stages"]]
    assert [s for r, s in stages if r == 2] == ["generate", "score", "pairs", "select", "publish", "train", "evaluate"]
    by_round = {k: s for k, s in zip(stages, summary["stages"])}
    catalog = open_catalog(tmp_path / "catalog")
    v1, v2 = by_round[1, "publish"]["detail"]["version"], by_round[2, "publish"]["detail"]["version"]
    assert summary["version"] == v2 == "rounds@v2"
    assert catalog.generated_by(v1) == str(tiny_chat.resolve())
    assert catalog.generated_by(v2) == f"model:{by_round[1, 'train']['detail']['model_id']}"
    for k in (1, 2):  # each round's evaluation is in the summary, with its interval
        iv = by_round[k, "evaluate"]["detail"]["intervals"]["after_vs_control"]
        assert iv["low"] <= iv["mean"] <= iv["high"]
