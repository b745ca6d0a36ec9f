"""One registry per component kind, keyed by the name used in recipes.

A component is a class with a nested pydantic `Config`. Registration is one decorator:

    @SELECTORS.register("kmq")
    class KMQ(Selector):
        class Config(SelectorConfig):
            k: int = 64

Recipes validate each stage entry against the registered `Config`, so a typo fails when the
recipe is loaded, before any model loads. Implementation modules keep heavy imports (torch,
vllm, transformers) inside functions so that validation stays fast.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from curation.models import is_hub_id
from curation.schema import content_hash, fingerprint

T = TypeVar("T")


class ComponentConfig(BaseModel):
    """Base of every component configuration: unknown keys are errors.

    `local_paths` names fields that hold local files or models: a recipe resolves them against
    its own folder and reports a missing one when it loads. `optional_paths` are resolved the
    same way when the file exists and kept as written otherwise (a catalog ref, a run output).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    local_paths: ClassVar[tuple[str, ...]] = ()
    optional_paths: ClassVar[tuple[str, ...]] = ()


class Component:
    """Base of every component: holds its validated config and knows its fingerprint."""

    Config: type[ComponentConfig] = ComponentConfig
    name: str = ""  # set by Registry.register
    version: str = "1"  # bump when a change alters outputs, so cached artifacts are recomputed

    def __init__(self, config: ComponentConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = self.Config(**kwargs)
        elif kwargs:
            config = config.model_copy(update=kwargs)
        self.config = config

    def model_identity(self) -> str | None:
        """What the outputs depend on beyond the config: a hash of a model's files, or the model a
        server reports. None: no model. Part of the fingerprint, so a model changed in place
        (same path, new weights) invalidates every cached result it produced."""
        return None

    @property
    def fingerprint(self) -> str:
        fp = fingerprint(self.name, self.config.model_dump(mode="json"), self.version)
        identity = self.model_identity()
        return fp if identity is None else content_hash("component", fp, identity)


class UnknownComponent(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one is for people
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> component class, filled on first use by importing every module of `package`.

    Adding a component is one file in the package with one `register` decorator: no list to edit.
    """

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self._package = package
        self._classes: dict[str, type] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            pkg = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self._package}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownComponent(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}"
            ) from None

    def config_model(self, name: str) -> type[ComponentConfig]:
        return self.get(name).Config  # type: ignore[attr-defined,no-any-return]

    def build(self, name: str, config: ComponentConfig | dict[str, Any] | None = None) -> T:
        cls = self.get(name)
        if isinstance(config, dict):
            config = cls.Config(**config)  # type: ignore[attr-defined]
        return cls(config)  # type: ignore[call-arg]


# ---------------------------------------------------------------- paths in configurations


def resolve_local_path(value: str, base_dir: Path, planned: set[str] = frozenset(), must_exist: bool = True) -> str:
    """A path from a recipe, made absolute against the recipe's folder.

    `must_exist`: a missing path is an error, unless a `models:` entry builds it (`planned`) or it
    is a hub id while the hub is reachable. Otherwise a missing path is kept as written (it may
    be a catalog ref or a later stage's output).
    """
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.exists() or str(path) in planned:
        return str(path)
    if not must_exist:
        return value
    looks_like_hub_id = is_hub_id(value)
    if looks_like_hub_id and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
        return value
    raise ValueError(
        f"not found: {path}"
        + (" (HF_HUB_OFFLINE is set, so it cannot be fetched from the hub)" if looks_like_hub_id else "")
    )


def output_path(value: str, info: ValidationInfo) -> str:
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    return str(path if path.is_absolute() or base is None else Path(base) / path)


OutputPath = Annotated[str, AfterValidator(output_path)]
"""A path the run writes, relative to the recipe's folder; need not exist yet."""
