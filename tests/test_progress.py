from __future__ import annotations

from mmembed.progress import report, tqdm_progress


def test_report_calls_through_and_tolerates_none():
    seen: list[tuple[int, int, str]] = []
    report(lambda done, total, desc: seen.append((done, total, desc)), 3, 10, "embedding")
    report(None, 3, 10, "embedding")  # nobody watching: nothing happens, nothing breaks
    assert seen == [(3, 10, "embedding")]


def test_tqdm_progress_keeps_one_bar_per_description(capsys):
    with tqdm_progress(unit="img") as progress:
        progress(1, 4, "embedding")
        progress(4, 4, "embedding")
        progress(2, 2, "indexing")
    err = capsys.readouterr().err
    assert "embedding: 100%" in err and "4/4" in err
    assert "indexing: 100%" in err and "2/2" in err


def test_a_restarted_job_gets_a_fresh_bar(capsys):
    """Two training stages report under one description: the second must not inherit the first's clock."""
    with tqdm_progress(unit="step") as progress:
        progress(5, 5, "training")
        progress(1, 3, "training")  # counts went back and the total changed: a new run
        progress(3, 3, "training")
    err = capsys.readouterr().err
    assert "5/5" in err and "3/3" in err
    assert "0/5" in err and "0/3" in err  # each run's bar opened at zero (a reused bar would show no "0/3")
