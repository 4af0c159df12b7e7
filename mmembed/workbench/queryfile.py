"""Query sets for the workbench: the shipped one, or an uploaded M-BEIR query jsonl checked against the corpus.

An uploaded file is a visitor's input: it is size-capped, must be UTF-8 JSON lines, its query images must lie
inside the corpus folder (it cannot name a server file), and every positive must exist in the loaded corpus.
The first problem is reported as one message naming its line (and how many more there are), without any
server path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.types import ValidationError
from mmembed.workbench.run import QuerySet

if TYPE_CHECKING:
    from mmembed.corpus import Corpus

MAX_UPLOAD_BYTES = 5 * 2**20


class QueryFileError(ValidationError):
    """A query file that cannot be used; the message names the file (by its display name) and the line."""


def load_query_set(path: str | Path, corpus: Corpus, *, name: str | None = None,
                   image_root: str | Path | None = None, max_bytes: int | None = None) -> QuerySet:
    """Read and validate an M-BEIR query jsonl against `corpus`.

    `name` is what messages and reports call the file (default: its file name). `image_root` is the folder
    query image paths are relative to (default: the file's folder). With `max_bytes` (uploads), the file must
    not be larger, and its images must lie inside `image_root` (default: the corpus folder).
    """
    from mmembed.corpus import CorpusValidationError, load_queries

    path = Path(path)
    shown = name or path.name
    try:
        data = path.read_bytes() if max_bytes is None else _read_capped(path, max_bytes, shown)
    except OSError as exc:
        raise QueryFileError(f"{shown}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not data.strip():
        raise QueryFileError(f"{shown}: the file is empty; expected one JSON query per line")
    if max_bytes is not None:
        image_root = Path(image_root) if image_root is not None else corpus.root
        if image_root is None:
            raise QueryFileError(f"{shown}: the loaded corpus has no folder, so query images cannot be resolved")
        _check_upload_lines(data, Path(image_root), shown)
    try:
        queries = load_queries(path, corpus, image_root=image_root)
    except CorpusValidationError as exc:
        first = exc.problems[0]
        more = len(exc.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise QueryFileError(f"{shown}: {_without_paths(first, path, image_root)}{suffix}") from None
    return QuerySet(shown, hashlib.sha256(data).hexdigest(), tuple(queries))


def _read_capped(path: Path, max_bytes: int, shown: str) -> bytes:
    size = path.stat().st_size
    if size > max_bytes:
        raise QueryFileError(f"{shown}: {size / 2**20:.1f} MB; query files are limited to "
                             f"{max_bytes / 2**20:g} MB")
    return path.read_bytes()


def _check_upload_lines(data: bytes, root: Path, shown: str) -> None:
    """UTF-8, and every query image inside `root`: checked here, by line, before the loader resolves paths."""
    root = root.resolve()
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise QueryFileError(f"{shown}: line {line_no}: not UTF-8 text") from None
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue  # the loader reports it, with the same line number
        image = row.get("query_img_path") if isinstance(row, dict) else None
        if image and not _inside(root, str(image)):
            raise QueryFileError(f"{shown}: line {line_no}: query_img_path {str(image)[:80]!r} is outside the "
                                 f"corpus folder; use a path relative to it")


def _inside(root: Path, relative: str) -> bool:
    if Path(relative).is_absolute():
        return False
    try:
        (root / relative).resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _without_paths(message: str, path: Path, image_root: str | Path | None) -> str:
    """Server folders out of a loader message (it names missing images by absolute path)."""
    folders = {str(Path(image_root).resolve()) if image_root else "", str(path.resolve().parent)}
    for folder in sorted(folders, key=len, reverse=True):  # the deepest first, so no partial path is left
        if folder:
            message = message.replace(folder + "/", "")
    return message
