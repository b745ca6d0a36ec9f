"""Recipe: the typed YAML configuration of one curation run, validated before anything runs.

Each stage entry names its component by `backend` (generate), `kind` (score, select) or
`builder` (pairs) and is validated against that component's registered `Config`. Every
problem is reported at once, each with the YAML path and line, so a typo fails before any
model loads. Relative paths resolve against the recipe file's folder.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from curation import schema
from curation.registry import ComponentConfig, OutputPath, UnknownComponent, resolve_local_path

STAGES = ("sources", "generate", "score", "pairs", "select", "publish", "train", "evaluate")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SourceSpec(_Section):
    """One input: a file (JSONL, Parquet, HF save_to_disk folder), a hub dataset, or a DuckDB query."""

    path: str | None = None
    format: str = "auto"
    limit: int | None = Field(None, ge=1)
    query: str | None = None
    split: str | None = None
    name: str | None = None
    license: str | None = Field(None, description="the source's license (a Hub license id) for the version's card; "
                                "default: what the source declares beside itself")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from curation.sources.adapters import FORMATS

        if value != "auto" and value not in FORMATS:
            raise ValueError(f"unknown source format {value!r}{_suggest(value, FORMATS)} (known: auto, {', '.join(FORMATS)})")
        return value

    @model_validator(mode="after")
    def _needs_path_or_query(self) -> "SourceSpec":
        if self.path is None and self.query is None:
            raise ValueError("a source needs a `path` or a `query`")
        return self


class ModelBuild(_Section):
    """A model the run builds before its stages when the folder is missing (tiny or quickstart models)."""

    path: OutputPath
    build: str = Field(description="a builder in curation.recipe.MODEL_BUILDERS")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("build")
    @classmethod
    def _known_builder(cls, value: str) -> str:
        if value not in MODEL_BUILDERS:
            raise ValueError(f"unknown model builder {value!r}; known: {', '.join(sorted(MODEL_BUILDERS))}")
        return value

    @model_validator(mode="after")
    def _options_fit_builder(self) -> "ModelBuild":
        """An option the builder does not take fails at load, naming the ones it does (not a TypeError mid-run)."""
        params = inspect.signature(model_builder(self.build)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return self
        taken = [name for name in list(params)[1:]]  # the first is the folder to build in
        unknown = sorted(set(self.options) - set(taken))
        if unknown:
            raise ValueError(f"builder {self.build!r} takes no option {', '.join(map(repr, unknown))}; "
                             f"it takes: {', '.join(taken) or 'none'}")
        return self


class PublishSpec(_Section):
    name: str | None = None  # dataset name; the recipe's name by default
    formats: list[str] = Field(default_factory=list)
    out: OutputPath | None = None  # where exported views go; <catalog>/exports/<name>@vN by default
    card: bool = True
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else schema.dataset_name(value)

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        from curation.export import FORMATS

        unknown = [f for f in value if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown publish format {unknown[0]!r}{_suggest(unknown[0], FORMATS)} (known: {', '.join(FORMATS)})")
        return value


class Recipe(_Section):
    name: str
    description: str = ""
    models: list[ModelBuild] = Field(default_factory=list)
    sources: list[SourceSpec] = Field(default_factory=list)
    generate: SerializeAsAny[ComponentConfig] | None = None
    score: list[SerializeAsAny[ComponentConfig]] = Field(default_factory=list)
    pairs: SerializeAsAny[ComponentConfig] | None = None
    select: list[SerializeAsAny[ComponentConfig]] = Field(default_factory=list)
    publish: PublishSpec = Field(default_factory=PublishSpec)
    train: SerializeAsAny[ComponentConfig] | None = None
    evaluate: SerializeAsAny[ComponentConfig] | None = None
    rounds: int = Field(1, ge=1, description="on-policy rounds: round N generates with round N-1's policy")
    round_prompts: int | None = Field(
        None, ge=1, description="fresh prompts per round: round N samples the N-th of disjoint random shares of this "
                                "many source prompts (unset: every round samples all of them)")

    path: Path | None = Field(None, exclude=True)  # the file it was loaded from

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return schema.dataset_name(value)

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if not self.sources:
            raise ValueError("a recipe needs at least one entry under `sources`")
        names = [s.name for s in self.score]  # type: ignore[attr-defined]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"score names must be unique; repeated: {', '.join(dupes)}")
        if self.evaluate is not None:
            from curation.train.config import check_judge_independent

            check_judge_independent(self.evaluate, self.score)
        if self.rounds > 1 and (self.generate is None or self.train is None):
            raise ValueError("`rounds` > 1 needs both `generate` and `train` (round N generates with round N-1's policy)")
        if self.round_prompts is not None and self.generate is None:
            raise ValueError("`round_prompts` needs `generate` (it chooses the prompts each round samples)")
        return self

    @property
    def dataset_name(self) -> str:
        return self.publish.name or self.name

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def score_names(self) -> list[str]:
        return [s.name for s in self.score]  # type: ignore[attr-defined]


MODEL_BUILDERS: dict[str, str] = {
    "tiny_chat": "curation.testing:tiny_chat_model",
    "tiny_reward": "curation.testing:tiny_reward_model",
    "quickstart_policy": "curation.quickstart:build_policy",
}


def model_builder(name: str):
    module, func = MODEL_BUILDERS[name].split(":")
    return getattr(importlib.import_module(module), func)


# ---------------------------------------------------------------- components per section


def _registry(section: str):
    """(registry, discriminator field) of a component section; imported lazily."""
    if section == "generate":
        from curation.generate import GENERATORS

        return GENERATORS, "backend"
    if section == "score":
        from curation.scorers import SCORERS

        return SCORERS, "kind"
    if section == "pairs":
        from curation.pairs import PAIR_BUILDERS

        return PAIR_BUILDERS, "builder"
    if section == "select":
        from curation.selectors import SELECTORS

        return SELECTORS, "kind"
    raise KeyError(section)


def _train_config(section: str) -> type[BaseModel]:
    from curation.train import config

    return config.TrainConfig if section == "train" else config.EvaluateConfig


# ---------------------------------------------------------------- errors with YAML lines


@dataclass
class Problem:
    loc: tuple[Any, ...]
    message: str
    line: int | None = None

    def where(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "(recipe)"


class RecipeError(ValueError):
    """Every problem of a recipe, each with its YAML path and line."""

    def __init__(self, path: Path | str, problems: list[Problem]):
        self.path = Path(path)
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.where()))
        lines = [f"{self.path}:{p.line or '?'}: {p.where()}: {p.message}" for p in self.problems]
        super().__init__(f"{len(self.problems)} problem(s) in recipe {self.path}:\n" + "\n".join(lines))


def _line_index(node: yaml.Node, loc: tuple = ()) -> dict[tuple, int]:
    """Map every YAML path (keys and list indices) to its 1-based line."""
    index = {loc: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = loc + (key.value,)
            index[sub] = key.start_mark.line + 1
            for k, v in _line_index(value, sub).items():
                index.setdefault(k, v)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, loc + (i,)))
    return index


def _line_of(index: dict[tuple, int], loc: tuple) -> int | None:
    while loc and loc not in index:
        loc = loc[:-1]
    return index.get(loc)


def _problems(exc: ValidationError, prefix: tuple) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
        out.append(Problem(loc, msg))
    return out


def _suggest(key: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; raises RecipeError listing every problem with its line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(path, [Problem((), f"recipe file not found: {path}")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(path, [Problem((), f"unreadable recipe: {exc}")]) from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RecipeError(path, [Problem((), f"not valid YAML: {exc}", mark.line + 1 if mark else None)]) from None
    if not isinstance(data, dict):
        raise RecipeError(path, [Problem((), "a recipe is a YAML mapping of sections (name, sources, ...)", 1)])
    duplicates = _duplicate_keys(node)
    if duplicates:
        raise RecipeError(path, duplicates)
    return validate_recipe(data, base_dir=path.parent, index=_line_index(node) if node else {}, path=path)


def _duplicate_keys(node: yaml.Node | None, loc: tuple = ()) -> list[Problem]:
    """YAML keeps the last of two equal keys without a word; a recipe with one is refused."""
    out: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.value in first:
                out.append(Problem(loc + (key.value,), f"duplicate key (first on line {first[key.value]}): "
                                   "YAML would silently keep only the last; remove one", line))
            first.setdefault(key.value, line)
            out.extend(_duplicate_keys(value, loc + (key.value,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.extend(_duplicate_keys(item, loc + (i,)))
    return out


def validate_recipe(
    data: dict[str, Any], base_dir: Path | str = ".", index: dict[tuple, int] | None = None, path: Path | None = None
) -> Recipe:
    index = index or {}
    base_dir = Path(base_dir)
    problems: list[Problem] = []
    data = dict(data)
    planned = _planned_models(data.get("models"), base_dir)
    context = {"base_dir": base_dir, "planned_models": planned}

    for section in ("generate", "pairs", "train", "evaluate"):
        if isinstance(data.get(section), dict):
            data[section] = _component(section, data[section], (section,), context, problems)
    for section in ("score", "select"):
        entries = data.get(section)
        if isinstance(entries, list):
            data[section] = [
                _component(section, e, (section, i), context, problems) if isinstance(e, dict) else e
                for i, e in enumerate(entries)
            ]
    if isinstance(data.get("sources"), list):
        data["sources"] = [_source(s, i, context, problems) for i, s in enumerate(data["sources"])]

    recipe = None
    unknown = [k for k in data if k not in Recipe.model_fields or k == "path"]
    for key in unknown:
        problems.append(Problem((key,), "unknown section" + _suggest(key, [*STAGES, "name", "models", "rounds", "round_prompts"])))
        data.pop(key)
    try:
        recipe = Recipe.model_validate({**data, "path": path}, context=context)
    except ValidationError as exc:
        # entries that failed their own Config stayed raw dicts: don't report them twice
        failed = {p.loc[:2] if p.loc[0] in ("score", "select", "sources") else p.loc[:1] for p in problems}
        problems.extend(p for p in _problems(exc, ()) if not any(p.loc[: len(f)] == f for f in failed))
    if not problems and recipe is not None:
        problems.extend(_cross_references(recipe))
    if problems:
        for p in problems:
            p.line = p.line or _line_of(index, p.loc)
        raise RecipeError(path or base_dir / "<recipe>", problems)
    assert recipe is not None
    return recipe


def _planned_models(entries: Any, base_dir: Path) -> set[str]:
    if not isinstance(entries, list):
        return set()
    out = set()
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("path"), str):
            p = Path(e["path"]).expanduser()
            out.add(str(p if p.is_absolute() else base_dir / p))
    return out


def _source(entry: Any, i: int, context: dict, problems: list[Problem]) -> Any:
    """Sources: a path that looks local must exist; hub names and queries pass through."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return entry
    raw = entry["path"]
    p = Path(raw).expanduser()
    full = p if p.is_absolute() else context["base_dir"] / p
    looks_local = full.exists() or raw.startswith((".", "/", "~")) or p.suffix in (
        ".jsonl", ".gz", ".json", ".parquet", ".duckdb", ".csv",
    )
    if looks_local:
        from curation.sources.readers import HF_DISK_MARKERS

        where = ("sources", i, "path")
        if not full.exists():
            problems.append(Problem(where, f"file not found: {full}"))
        elif full.is_dir() and not any((full / m).exists() for m in HF_DISK_MARKERS):
            problems.append(Problem(where, f"{full} is a folder, not a data file or a saved HF dataset "
                                           f"(none of {', '.join(HF_DISK_MARKERS)} in it)"))
        elif full.is_file() and full.stat().st_size == 0:
            problems.append(Problem(where, f"{full} is empty (0 bytes)"))
        return {**entry, "path": str(full)}
    return entry


def _component(section: str, entry: dict, loc: tuple, context: dict, problems: list[Problem]) -> Any:
    """Validate one stage entry against its registered Config; record problems, return the config."""
    if section in ("train", "evaluate"):
        model = _train_config(section)
    else:
        registry, key = _registry(section)
        name = entry.get(key)
        if name is None:
            problems.append(Problem(loc, f"missing `{key}`: one of {', '.join(registry.names())}"))
            return entry
        try:
            model = registry.config_model(name)
        except UnknownComponent:
            problems.append(Problem(loc + (key,), f"unknown {registry.kind} {name!r}" + _suggest(
                str(name), registry.names()) + f" (known: {', '.join(registry.names())})"))
            return entry
    try:
        config = model.model_validate(entry, context=context)
    except ValidationError as exc:
        found = _problems(exc, loc)
        for p in found:
            if p.message == "unknown key":
                p.message += _suggest(str(p.loc[-1]), model.model_fields)
        problems.extend(found)
        return entry
    return _resolve_paths(config, loc, context, problems)


def _resolve_paths(config: ComponentConfig, loc: tuple, context: dict, problems: list[Problem]) -> ComponentConfig:
    """The config with its declared path fields absolute against the recipe's folder."""
    update = {}
    for field, must_exist in [(f, True) for f in config.local_paths] + [(f, False) for f in config.optional_paths]:
        value = getattr(config, field, None)
        if isinstance(value, str) and value:
            try:
                update[field] = resolve_local_path(value, context["base_dir"], context["planned_models"], must_exist)
            except ValueError as exc:
                problems.append(Problem(loc + (field,), str(exc)))
    return config.model_copy(update=update) if update else config


def _cross_references(recipe: Recipe) -> list[Problem]:
    """Names that point at other sections: a score a later stage uses must be produced by a scorer."""
    produced = set(recipe.score_names())
    problems: list[Problem] = []

    def check(loc: tuple, config: BaseModel) -> None:
        for field in ("score", "scores"):
            value = getattr(config, field, None)
            names = [value] if isinstance(value, str) else list(value or []) if isinstance(value, list) else []
            for j, n in enumerate(names):
                if produced and n not in produced:
                    where = loc + ((field,) if isinstance(value, str) else (field, j))
                    problems.append(Problem(where, f"no scorer named {n!r}; scorers: {', '.join(sorted(produced))}"))

    if recipe.pairs is not None:
        check(("pairs",), recipe.pairs)
    for i, s in enumerate(recipe.select):
        check(("select", i), s)
    return problems
