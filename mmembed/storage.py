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


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename tmp_path onto `path`; the temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, value: Any) -> Path:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_save_npy(path: str | Path, array: Any) -> Path:
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)

    return atomic_write(path, write)


def read_json(path: str | Path) -> Any | None:
    """The parsed JSON at `path`, or None when it is missing or not valid JSON (caller decides)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
