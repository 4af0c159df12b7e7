"""Bound the disk a folder of scratch files may use: over the cap, the oldest files go first.

Used for what a public demo writes on its visitors' behalf (uploads, pasted images, exports): an age
limit alone lets one busy client fill the disk long before anything is old enough to delete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Eviction:
    """What one `DiskCap.enforce` found and did."""

    total_bytes: int  # before eviction
    removed: int
    freed_bytes: int


class DiskCap:
    """Keep the files under `folder` (recursively) at or below `max_bytes`, deleting the oldest first.

    The newest file is never deleted by its own arrival: eviction stops as soon as the total fits, and
    `keep_newest_s` protects files younger than that (a search may be about to read an upload just made).
    """

    def __init__(self, folder: str | Path, max_bytes: int, *, keep_newest_s: float = 5.0) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self.keep_newest_s = keep_newest_s
        self._lock = threading.Lock()

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for dirpath, _dirs, names in os.walk(self.folder):
            for name in names:
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):  # removed meanwhile by someone else: not ours to count
                    info = path.lstat()
                    found.append((info.st_mtime, info.st_size, path))
        return found

    def usage(self) -> int:
        return sum(size for _, size, _ in self._files())

    def enforce(self) -> Eviction:
        """Delete the oldest files until the total fits the cap; empty folders left behind go too."""
        with self._lock:
            files = self._files()
            total = sum(size for _, size, _ in files)
            if total <= self.max_bytes:
                return Eviction(total, 0, 0)
            young = time.time() - self.keep_newest_s
            removed = freed = 0
            for mtime, size, path in sorted(files, key=lambda f: f[0]):
                if total - freed <= self.max_bytes or mtime > young:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
                    freed += size
                    _remove_empty_parents(path.parent, self.folder)
            return Eviction(total, removed, freed)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            return
        folder = folder.parent


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def remove_orphaned(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the folders `parent/<prefix><pid>` whose process has exited; returns what was removed.

    A process cannot clean up after a `kill -9`; the next one started does it instead.
    """
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for folder in parent.glob(f"{prefix}*"):
        suffix = folder.name[len(prefix):]
        if not folder.is_dir() or not suffix.isdigit() or int(suffix) == os.getpid() or pid_alive(int(suffix)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
