import shutil
import textwrap
from pathlib import Path

import pytest

from curation.recipe import RecipeError, load_recipe

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXAMPLE = """\
name: hh-curated
sources:
  - {path: data/hh.jsonl.gz, format: auto, limit: 1000}
generate: {backend: vllm, model: models/policy, n: 4, sampling: {temperature: 0.8, max_tokens: 256, seed: 0}}
score:
  - {name: rm, kind: reward_model, model: models/rm}
  - {name: judge, kind: judge, backend: openai, base_url: "http://127.0.0.1:8000/v1", model: judge, mode: pairwise, both_orders: true}
pairs: {builder: best_worst, score: rm, min_margin: 0.0}
select:
  - {kind: noise, method: ensemble, scores: [rm, judge], action: drop}
  - {kind: kmq, k: 64, budget: 500}
publish: {formats: [trl_dpo]}
"""


def write(dir_: Path, text: str) -> Path:
    path = dir_ / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return [(p.line, p.where(), p.message) for p in info.value.problems]


def test_example_recipe_loads_with_typed_components(recipe_dir):
    r = load_recipe(write(recipe_dir, EXAMPLE))
    assert r.name == "hh-curated" and r.dataset_name == "hh-curated"
    assert r.sources[0].path == str(recipe_dir / "data/hh.jsonl.gz")  # resolved against the recipe
    assert r.generate.model == str(recipe_dir / "models/policy")
    assert r.generate.sampling.temperature == 0.8 and r.generate.n == 4
    assert [s.kind for s in r.score] == ["reward_model", "judge"]
    assert r.score_names() == ["rm", "judge"]
    assert [s.kind for s in r.select] == ["noise", "kmq"]
    assert r.pairs.builder == "best_worst"
    assert type(r.select[1]).__name__ != "ComponentConfig"  # the registered Config, not the base


def test_typo_in_a_nested_key_names_path_line_and_suggestion(recipe_dir):
    text = EXAMPLE.replace("temperature: 0.8", "temprature: 0.8")
    [(line, where, msg)] = problems(write(recipe_dir, text))
    assert line == 4 and where == "generate.sampling.temprature"
    assert "unknown key" in msg and "temperature" in msg


def test_every_problem_is_reported_at_once_with_lines(recipe_dir):
    text = (
        EXAMPLE.replace("n: 4", "n: four")
        .replace("kind: kmq", "kind: kmqq")
        .replace("data/hh.jsonl.gz", "data/missing.jsonl.gz")
        .replace("score: rm, min_margin", "score: rmm, min_margin")
    )
    found = problems(write(recipe_dir, text))
    by_where = {where: (line, msg) for line, where, msg in found}
    assert by_where["sources[0].path"][0] == 3 and "file not found" in by_where["sources[0].path"][1]
    assert by_where["generate.n"][0] == 4 and "'four'" in by_where["generate.n"][1]
    assert by_where["select[1].kind"][0] == 11 and "did you mean 'kmq'" in by_where["select[1].kind"][1]


def test_score_references_must_name_a_scorer(recipe_dir):
    text = EXAMPLE.replace("score: rm, min_margin", "score: rmm, min_margin")
    [(line, where, msg)] = problems(write(recipe_dir, text))
    assert (line, where) == (8, "pairs.score") and "'rmm'" in msg and "rm" in msg


def test_missing_model_and_unknown_section(recipe_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = EXAMPLE.replace("model: models/rm", "model: models/nope") + "sellect: []\n"
    found = problems(write(recipe_dir, text))
    assert (6, "score[0].model") in [(line, where) for line, where, _ in found]
    assert any(where == "sellect" and "did you mean 'select'" in msg for _, where, msg in found)


def test_models_section_plans_models_the_run_builds(recipe_dir):
    text = "models:\n  - {path: models/new, build: tiny_chat}\n" + EXAMPLE.replace(
        "model: models/policy", "model: models/new"
    )
    r = load_recipe(write(recipe_dir, text))
    assert r.models[0].path == str(recipe_dir / "models/new")
    bad = text.replace("build: tiny_chat", "build: tiny_chatt")
    assert any("unknown model builder" in m for _, _, m in problems(write(recipe_dir, bad)))


@pytest.mark.parametrize(
    "text, where",
    [
        ("[1, 2]", "(recipe)"),
        ("name: x\nsources: [{path: a.jsonl\n", "(recipe)"),
        ("name: 'a/b'\nsources: [{query: 'select 1'}]\n", "name"),
        ("name: ok\n", "(recipe)"),
    ],
)
def test_malformed_recipes(tmp_path, text, where):
    found = problems(write(tmp_path, text))
    assert where in [w for _, w, _ in found]


def test_a_judge_that_labels_and_evaluates_is_refused_unless_the_recipe_says_so(recipe_dir):
    same_judge = "{kind: judge, backend: openai, base_url: \"http://127.0.0.1:8000/v1\", model: judge}"
    evaluate = f"train: {{method: dpo, model: models/policy}}\nevaluate: {{judge: {same_judge}}}\n"
    [(_, where, msg)] = problems(write(recipe_dir, EXAMPLE + evaluate))
    assert "evaluate.judge (judge, judge) is also score[1]" in msg and "allow_judge_overlap" in msg
    allowed = evaluate.replace("{judge:", "{allow_judge_overlap: true, judge:")
    assert load_recipe(write(recipe_dir, EXAMPLE + allowed)).evaluate.allow_judge_overlap
    other = evaluate.replace("model: judge}", "model: other-judge}")
    assert load_recipe(write(recipe_dir, EXAMPLE + other)).evaluate.judge["model"] == "other-judge"


def test_epsilon_under_a_loss_that_ignores_it_fails_at_recipe_load(recipe_dir):
    [(_, where, msg)] = problems(write(recipe_dir, EXAMPLE + "train: {method: dpo, model: models/policy, epsilon: 0.1}\n"))
    assert where.startswith("train") and "ignores it" in msg


def test_a_model_builder_option_it_does_not_take_fails_at_load(tmp_path):
    """`options: {heldout: 100}` (an option the quickstart policy dropped) names the option and the ones it takes."""
    import yaml

    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns(".curate"))
    recipe = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    recipe["models"][0]["options"] = {"heldout": 100}
    path = tmp_path / "examples" / "quickstart.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"models\[0\].*heldout.*steps"):
        load_recipe(path)
    recipe["models"][0]["options"] = {"steps": 10}
    path.write_text(yaml.safe_dump(recipe))
    load_recipe(path)


def test_fresh_prompts_per_round_need_a_generator(recipe_dir):
    found = problems(write(recipe_dir, "name: x\nround_prompts: 3\nsources:\n  - {path: data/hh.jsonl.gz}\n"))
    assert any("round_prompts" in message and "generate" in message for _, _, message in found)
    assert load_recipe(write(recipe_dir, EXAMPLE + "round_prompts: 3\n")).round_prompts == 3
