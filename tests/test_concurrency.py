"""FairLock: a waiting thread gets the next turn even when the holder re-acquires at once."""

from __future__ import annotations

import threading
import time

from mmembed.concurrency import FairLock


def test_a_waiter_is_served_before_the_holder_runs_again():
    lock = FairLock()
    order: list[str] = []
    started = threading.Event()

    def evaluation():
        for i in range(40):
            with lock:
                order.append(f"eval{i}")
                started.set()
                time.sleep(0.002)

    worker = threading.Thread(target=evaluation)
    worker.start()
    started.wait()
    with lock:
        order.append("search")
    worker.join()
    position = order.index("search")
    assert 1 <= position <= 2  # served after at most the query in flight and one already queued
    assert len(order) == 41


def test_reentrant_for_the_holder_and_refuses_a_foreign_release():
    lock = FairLock()
    with lock, lock:
        pass
    lock.acquire()
    errors: list[str] = []

    def foreign_release():
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=foreign_release)
    thread.start()
    thread.join()
    lock.release()
    assert errors == ["FairLock released by a thread that does not hold it"]
