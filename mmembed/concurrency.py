"""A first-come, first-served lock for the models the page's events share.

The Search tab and a long evaluation in the Evaluate tab run in different Gradio concurrency groups so that a
search is not queued behind a whole evaluation. They still share the loaded models, whose tokenizers are not
safe to call from two threads at once. The evaluation takes this lock for one query at a time; a search that
arrives meanwhile gets the next turn (a plain threading.Lock would let the evaluation, which re-acquires at
once, starve it), so it answers within about one query's time plus its own.
"""

from __future__ import annotations

import itertools
import threading
from types import TracebackType


class FairLock:
    """A ticket lock: waiters get the lock in the order they asked. Re-entrant for the holding thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            ticket = next(self._tickets)
            while self._serving != ticket:
                self._cond.wait()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("FairLock released by a thread that does not hold it")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                self._cond.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
