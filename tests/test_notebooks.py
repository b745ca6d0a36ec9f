"""notebooks/ run top to bottom in a real kernel (nbclient + ipykernel) against a small catalog."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from curation.catalog import open_catalog
from tests.test_catalog import make_tables

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _text(cell) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory):
    """explore.ipynb over `alpha` v1..v11 (v10 and v11 sort before v2 as text) and `beta`, published
    after it (the last row of `versions` and the newest dataset by name)."""
    root = tmp_path_factory.mktemp("nb") / "cat"
    cat = open_catalog(root)
    for n in range(1, 12):
        cat.publish("alpha", make_tables(2 + n, tag="a"), test_fraction=0.3 if n == 11 else 0.0)
    cat.publish("beta", make_tables(3, tag="b"))
    nb = nbformat.read(NOTEBOOKS / "explore.ipynb", as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATE_CATALOG", str(root))
        mp.setenv("CURATE_DATASET", "alpha")
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(root.parent)}}).execute()
    return nb


def test_explore_finds_the_newest_version_by_number(executed) -> None:
    out = "\n".join(_text(c) for c in executed.cells if c.cell_type == "code")
    assert re.search(r"newest: alpha@v11 \(13 pairs; train \d+, test \d+\)", out)


def test_explore_diffs_two_versions_of_the_same_dataset(executed) -> None:
    out = "\n".join(_text(c) for c in executed.cells if c.cell_type == "code")
    assert "diff alpha@v10 -> alpha@v11: added 1, removed 0" in out


def test_explore_draws_the_version_and_shows_its_card_plots(executed) -> None:
    code = [c for c in executed.cells if c.cell_type == "code"]
    drawn = next(c for c in code if "plt.subplots(1, 3" in c.source)
    card = next(c for c in code if '"plots"' in c.source)
    assert _images(drawn) == 1
    assert _images(card) == 2 and "lengths.png" in _text(card) and "margin.png" in _text(card)  # nothing dropped
