"""Atomic writes for everything mmembed puts on disk (indexes, embedding shards, manifests, weights).

A write goes to a temp file in the same folder and is renamed over the target, so a crash or Ctrl-C
never leaves a half-written file where a reader would trust it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Files mmembed writes (indexes, models, manifests) are meant to be shared like files any tool writes;
# mkstemp makes 0600 files, so every write states its mode instead of inheriting that accident.
DEFAULT_MODE = 0o644


def atomic_write(path: str | Path, write: Callable[[Path], None], *, mode: int = DEFAULT_MODE) -> Path:
    """Call `write(tmp_path)`, set `mode`, then rename tmp_path onto `path`.

    The temp file lives in the target's folder (the rename is atomic on one file system) and is removed
    on any failure, Ctrl-C included, so neither a half-written target nor a stray temp file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int = DEFAULT_MODE) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode=mode)


def atomic_write_text(path: str | Path, text: str, *, mode: int = DEFAULT_MODE) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


def atomic_copy(source: str | Path, path: str | Path, *, mode: int = DEFAULT_MODE) -> Path:
    """Copy `source` onto `path` atomically (a reader sees the old file or the whole new one)."""
    import shutil

    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp), mode=mode)


def atomic_write_json(path: str | Path, value: Any, *, sort_keys: bool = True, mode: int = DEFAULT_MODE) -> Path:
    text = json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, mode=mode)


def atomic_save_npy(path: str | Path, array: Any, *, mode: int = DEFAULT_MODE) -> Path:
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)

    return atomic_write(path, write, mode=mode)


def read_json(path: str | Path) -> Any | None:
    """The parsed JSON at `path`, or None when it is missing or not valid JSON (caller decides)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
