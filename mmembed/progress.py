"""One tiny progress interface shared by the CLI (tqdm), the Gradio UI (gr.Progress) and tests.

Long jobs (index build, model load, reranking) call `progress(done, total, description)`; whoever
started the job decides how to show it. `None` means "nobody is watching".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressFn = Callable[[int, int, str], None]


def report(progress: ProgressFn | None, done: int, total: int, description: str) -> None:
    """Call `progress` if there is one; the guard every long job would otherwise repeat."""
    if progress is not None:
        progress(done, total, description)


@contextmanager
def tqdm_progress(unit: str = "item", disable: bool = False) -> Iterator[ProgressFn]:
    """A ProgressFn that drives one tqdm bar per description (bars go to stderr)."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def update(done: int, total: int, description: str) -> None:
        bar = bars.get(description)
        if bar is not None and (done < bar.n or total != bar.total):
            # the same job started again (e.g. the next training stage): a fresh bar, so that its
            # elapsed time and rate are its own and not the previous run's
            bar.close()
            bar = None
        if bar is None:
            bar = bars[description] = tqdm(total=total, desc=description, unit=unit, disable=disable)
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()
