"""Progress bars: one shared live display for nested and concurrent work, user text shown literally,
nothing drawn where stderr is no terminal."""

from __future__ import annotations

import io
import threading

import polars as pl
import pytest
from rich.console import Console

from curation import progress as progress_module
from curation.progress import progress, tracked


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(progress_module, "console",
                        Console(file=out, force_terminal=True, width=150, markup=False, emoji=False, highlight=False))
    return out


def test_nested_and_concurrent_bars_share_one_display(terminal: io.StringIO) -> None:
    """A judge's generation bar inside the score bar, shards in threads: rich would raise LiveError
    for a second live display; here each is a task of the one shared display."""
    seen: list[int] = []
    errors: list[BaseException] = []

    def shard(k: int) -> None:
        try:
            with progress(f"shard {k}", total=3) as advance:
                for _ in range(3):
                    seen.append(len(progress_module._shared["live"].tasks))
                    advance()
        except BaseException as exc:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(exc)

    for _ in tracked(["judge", "rubric"], "score", lambda s: f"score: {s}"):
        with progress("openai: m", total=2) as inner:
            inner()
            threads = [threading.Thread(target=shard, args=(k,)) for k in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert not errors, errors
    assert max(seen) >= 3  # score + openai + at least one shard at the same time
    assert progress_module._shared["live"] is None and progress_module._users == [0]  # stopped with the last bar
    assert "score: judge" in terminal.getvalue() or "score: rubric" in terminal.getvalue()


def test_descriptions_are_literal_text(terminal: io.StringIO) -> None:
    name = "data[bold]x[/bold]:smile:.jsonl"
    with progress(f"reading {name}", total=2) as advance:
        advance()
        progress_module._shared["live"].refresh()
    assert f"reading {name}" in terminal.getvalue()


def test_a_bar_that_raises_still_ends_the_display(terminal: io.StringIO) -> None:
    with pytest.raises(ValueError):
        for item in tracked([1, 2, 3], "select"):
            if item == 2:
                raise ValueError("selector failed")
    assert progress_module._shared["live"] is None and progress_module._users == [0]


def test_nothing_is_drawn_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress_module, "console", Console(file=out, force_terminal=False))
    with progress("reading x", total=10) as advance:
        advance(5)
        assert progress_module._shared["live"] is None
    assert list(tracked([1, 2], "score")) == [1, 2]
    assert out.getvalue() == ""


def test_small_totals_draw_no_bar(terminal: io.StringIO) -> None:
    with progress("openai: m", total=3, min_total=8):
        assert progress_module._shared["live"] is None


@pytest.fixture
def described(terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every description a bar is given, in order."""
    seen: list[str] = []
    real_new = progress_module._new

    def recording() -> object:
        live = real_new()
        add, update = live.add_task, live.update

        def add_task(description, **kw):
            seen.append(description)
            return add(description, **kw)

        def update_task(task, **kw):
            if "description" in kw:
                seen.append(kw["description"])
            return update(task, **kw)

        live.add_task, live.update = add_task, update_task
        return live

    monkeypatch.setattr(progress_module, "_new", recording)
    return seen


def test_imports_scorers_and_selectors_show_their_bars(described: list[str], shared_data) -> None:
    from curation.scorers import run_scorers
    from curation.select import apply_selectors
    from curation.sources import read_source

    path = shared_data / "pandalm_testset.jsonl.gz"
    data = read_source(path, limit=40)
    assert described == [f"reading {path}"]
    run_scorers([{"name": "len", "kind": "heuristic", "unit": "chars"}, {"name": "words", "kind": "heuristic", "unit": "words"}],
                data.prompts, data.candidates)
    assert described[1:] == ["score", "score: len (heuristic)", "score: words (heuristic)"]
    del described[:]
    pool = data.pairs.with_columns(margin=pl.Series(range(data.pairs.height), dtype=pl.Float64))
    apply_selectors(pool, [{"kind": "random", "budget": 30, "seed": 0}, {"kind": "top_k", "budget": 10}], embed=None)
    assert described == ["select", "select: random", "select: top_k"]
