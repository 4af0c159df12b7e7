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
