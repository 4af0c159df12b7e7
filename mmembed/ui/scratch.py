"""The demo's scratch disk: visitors' uploads, pasted images and exports, bounded in total.

Gradio keeps uploads (and the files it serves back) in one folder, $GRADIO_TEMP_DIR or <tmp>/gradio.
Exports are written into a per-process folder inside it, so Gradio serves them without another copy and
one `DiskCap` bounds everything the visitors caused to be written: over the cap, the oldest files go.
Export folders of processes that exited (a crash, a `kill -9`) are removed when the next demo starts.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from mmembed.diskcap import DiskCap, remove_orphaned
from mmembed.storage import atomic_write_json

log = logging.getLogger("mmembed.ui")

DEFAULT_CAP_MB = 1024  # uploads are capped at 10 MB each: room for ~100 of them plus exports
EXPORT_PREFIX = "mmembed-exports-"
ENFORCE_EVERY_S = 1.0  # a flood of uploads is checked at most this often (a check walks the folder)


def gradio_folder() -> Path:
    """Where Gradio writes uploads and the files it serves back (its own rule, asked of Gradio)."""
    try:
        from gradio.utils import get_upload_folder

        return Path(get_upload_folder())
    except ImportError:  # the library without the demo extras
        return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def cap_bytes_from_env() -> int:
    raw = os.environ.get("MMEMBED_UI_DISK_MB", "")
    try:
        megabytes = int(raw) if raw.strip() else DEFAULT_CAP_MB
    except ValueError:
        raise ValueError(f"MMEMBED_UI_DISK_MB must be a whole number of megabytes, got {raw!r}") from None
    if megabytes <= 0:
        raise ValueError(f"MMEMBED_UI_DISK_MB must be positive, got {megabytes}")
    return megabytes * 2**20


class Scratch:
    """Exports on request, the disk cap over the whole Gradio folder, and clean-up of dead processes' exports."""

    def __init__(self, folder: str | Path | None = None, max_bytes: int | None = None, *,
                 keep_newest_s: float = 2.0) -> None:
        self.folder = Path(folder) if folder is not None else gradio_folder()
        self.cap = DiskCap(self.folder, max_bytes or cap_bytes_from_env(), keep_newest_s=keep_newest_s)
        self.exports = self.folder / f"{EXPORT_PREFIX}{os.getpid()}"
        self._last_check = 0.0
        self._check_lock = threading.Lock()

    def clean_start(self) -> None:
        """Remove the export folders earlier processes left (here and in the old <tmp> location), then cap."""
        removed = remove_orphaned(self.folder, EXPORT_PREFIX)
        removed += remove_orphaned(Path(tempfile.gettempdir()), EXPORT_PREFIX)
        if removed:
            log.info("removed %d export folder(s) left by exited processes", len(removed))
        self.enforce()

    def enforce(self) -> None:
        eviction = self.cap.enforce()
        self._last_check = time.monotonic()
        if eviction.removed:
            log.info("scratch disk over its %d MB cap (%.1f MB): removed the %d oldest file(s), %.1f MB",
                     self.cap.max_bytes // 2**20, eviction.total_bytes / 2**20, eviction.removed,
                     eviction.freed_bytes / 2**20)

    def maybe_enforce(self) -> None:
        """`enforce`, unless another check ran under ENFORCE_EVERY_S ago (uploads can come many a second)."""
        with self._check_lock:
            if time.monotonic() - self._last_check < ENFORCE_EVERY_S:
                return
            self._last_check = time.monotonic()
        self.enforce()

    def write_export(self, payload: dict[str, Any]) -> Path:
        """Write `payload` as a uniquely named JSON file (atomically) and return its path."""
        target = self.exports / f"mmembed-results-{uuid.uuid4().hex[:12]}.json"
        atomic_write_json(target, payload, sort_keys=False)  # the API's key order: query first
        self.enforce()
        return target

    def upload_middleware(self) -> Any:
        """ASGI middleware (for `launch(app_kwargs=...)`) that checks the cap after every upload request."""
        from starlette.middleware import Middleware

        return Middleware(_AfterUpload, scratch=self)


class _AfterUpload:
    """Pure ASGI middleware: after a request to Gradio's upload route finishes, enforce the disk cap."""

    def __init__(self, app: Any, scratch: Scratch) -> None:
        self.app = app
        self.scratch = scratch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        if scope.get("type") == "http" and str(scope.get("path", "")).rstrip("/").endswith("/upload"):
            import anyio

            await anyio.to_thread.run_sync(self.scratch.maybe_enforce)
