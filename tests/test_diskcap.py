"""DiskCap: a folder held under a byte cap, oldest files deleted first; folders of dead processes removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mmembed.diskcap import DiskCap, remove_orphaned


def _write(path, size, age_s):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_oldest_files_go_first_until_the_total_fits(tmp_path):
    old = _write(tmp_path / "a" / "old.bin", 400, 300)
    middle = _write(tmp_path / "b" / "middle.bin", 400, 200)
    new = _write(tmp_path / "new.bin", 400, 100)
    eviction = DiskCap(tmp_path, 900, keep_newest_s=0).enforce()
    assert (eviction.total_bytes, eviction.removed, eviction.freed_bytes) == (1200, 1, 400)
    assert not old.exists() and middle.exists() and new.exists()
    assert not (tmp_path / "a").exists()  # the folder it left empty went too
    assert DiskCap(tmp_path, 900).enforce().removed == 0  # under the cap: nothing to do
    DiskCap(tmp_path, 500, keep_newest_s=0).enforce()
    assert not middle.exists() and new.exists() and DiskCap(tmp_path, 500).usage() == 400


def test_files_younger_than_the_grace_period_are_kept(tmp_path):
    older = _write(tmp_path / "older.bin", 600, 60)
    fresh = _write(tmp_path / "fresh.bin", 600, 0)  # an upload a queued search is about to read
    eviction = DiskCap(tmp_path, 500, keep_newest_s=30).enforce()
    assert eviction.removed == 1 and not older.exists() and fresh.exists()


def test_a_cap_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        DiskCap(tmp_path, 0)


def test_folders_of_exited_processes_are_removed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = int(done.stdout)  # a process that has certainly exited
    _write(tmp_path / f"mmembed-exports-{dead}" / "r.json", 10, 0)
    _write(tmp_path / f"mmembed-exports-{os.getpid()}" / "mine.json", 10, 0)
    _write(tmp_path / "mmembed-exports-1" / "init.json", 10, 0)  # pid 1 is alive
    _write(tmp_path / "mmembed-exports-notapid" / "x.json", 10, 0)
    removed = remove_orphaned(tmp_path, "mmembed-exports-")
    assert [path.name for path in removed] == [f"mmembed-exports-{dead}"]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"mmembed-exports-{os.getpid()}", "mmembed-exports-1", "mmembed-exports-notapid"])
