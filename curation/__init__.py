"""curate: curated, versioned preference datasets and the models trained on them."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from curation.catalog import Catalog


def open_catalog(path: str | None = None) -> "Catalog":
    """Open (or create) a catalog: list versions, load them as polars / HF datasets / DuckDB, run SQL."""
    from curation.catalog import open_catalog as _open

    return _open(path)
