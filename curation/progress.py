"""Progress bars for long work (imports, scorers, selectors, generation), on stderr.

rich allows one live display per console, and work nests (a judge scorer's generation inside the
score bar) or runs in threads (flow shards), so every bar is a task of ONE shared `Progress`,
started with the first bar and stopped with the last. Descriptions carry user text (file names,
scorer names), so neither markup nor emoji codes are interpreted. Nothing is drawn when stderr is
not a terminal (logs, CI, pipes); stdout is left alone, as it may carry --json output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True, markup=False, emoji=False, highlight=False)
_lock = threading.Lock()
_shared: dict[str, Progress | None] = {"live": None}
_users = [0]


def _new() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,  # stdout may carry JSON; log lines on stderr still print above the bars
    )


@contextmanager
def progress(description: str, total: int | None = None, *, min_total: int = 1) -> Iterator[Callable[..., None]]:
    """A bar (or, without `total`, a spinner with a count) while the block runs; yields
    `advance(n=1, description=None)`. Bars for fewer than `min_total` items are not drawn."""
    if not console.is_terminal or (total is not None and total < min_total):
        yield lambda n=1, description=None: None
        return
    with _lock:
        live = _shared["live"]
        if live is None:
            live = _shared["live"] = _new()
            live.start()
        _users[0] += 1
        task = live.add_task(description, total=total)

    def advance(n: float = 1, description: str | None = None) -> None:
        live.update(task, advance=n, **({"description": description} if description is not None else {}))

    try:
        yield advance
    finally:
        with _lock:
            live.remove_task(task)
            _users[0] -= 1
            if _users[0] == 0:
                live.stop()
                _shared["live"] = None


def tracked(items: Sequence[T], description: str, label: Callable[[T], str] | None = None, *,
            min_total: int = 1) -> Iterator[T]:
    """Yield `items` under a bar that advances after each; `label(item)` names the one running."""
    with progress(description, total=len(items), min_total=min_total) as advance:
        for item in items:
            if label is not None:
                advance(0, description=label(item))
            yield item
            advance()
