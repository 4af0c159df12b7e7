"""Checksums of cached files: computed in chunks when a file is saved, verified when it is loaded.

The cache holds the index and embedding shards that every query trusts; a file damaged in a way its
format still reads (permuted rows, random bytes under a valid header, a zeroed shard) would otherwise
give wrong results silently. A size check runs at once; the full hash can run in a background thread
(`BackgroundCheck`) so a large index starts serving without waiting for it.

xxh3-128 (not sha256): this guards against damage, not an adversary who could rewrite the metadata
too, and it hashes ~10x faster (1.5 GB/s against 0.19 GB/s on this project's loaded 2-core box),
releasing the GIL, so a background check does not slow the queries served meanwhile.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALGORITHM = "xxh3_128"
CHUNK_BYTES = 8 * 2**20  # large enough that per-call overhead vanishes, small enough to stay in cache


def _hasher() -> Any:
    import xxhash

    return xxhash.xxh3_128()


def file_checksum(path: str | Path, *, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The hex checksum of the file at `path`, read in chunks (memory stays flat for any size)."""
    digest = _hasher()
    buffer = bytearray(chunk_bytes)  # one buffer reused: no allocation per chunk
    view = memoryview(buffer)
    with Path(path).open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def bytes_checksum(data: bytes) -> str:
    digest = _hasher()
    digest.update(data)
    return digest.hexdigest()


def json_checksum(value: Any) -> str:
    """Checksum of a JSON-able value in canonical form (sorted keys), for metadata that checks itself."""
    return bytes_checksum(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def file_record(path: str | Path) -> dict[str, Any]:
    """What metadata stores about a cached file: its size (the fast check) and checksum (the full one)."""
    path = Path(path)
    return {"bytes": path.stat().st_size, ALGORITHM: file_checksum(path)}


def size_problem(path: Path, record: Any) -> str | None:
    """Why `path` cannot be the file `record` describes by its size alone, or None (instant: one stat)."""
    if not isinstance(record, dict) or not isinstance(record.get("bytes"), int) or ALGORITHM not in record:
        return "has no checksum in its metadata"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if size == record["bytes"] else f"is {size:,} bytes, its metadata says {record['bytes']:,}"


def checksum_problem(path: Path, record: dict[str, Any]) -> str | None:
    """Why `path` does not match `record` (size, then full checksum), or None when it does."""
    problem = size_problem(path, record)
    if problem is not None:
        return problem
    try:
        actual = file_checksum(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if actual == record[ALGORITHM] else "does not match the checksum recorded when it was saved"


@dataclass
class BackgroundCheck:
    """A full checksum verification of one file, running in a daemon thread."""

    path: Path
    record: dict[str, Any]
    problem: str | None = None

    def __post_init__(self) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checksum {self.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.problem = checksum_problem(self.path, self.record)
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the check finished (or `timeout`); the problem found, or None."""
        self._done.wait(timeout)
        return self.problem
