"""The corpus images the page may serve, by corpus-relative path, and the route that serves them.

Gradio's own `file=` route serves whole folders (`allowed_paths`): pointing it at the corpus folder would
also serve whatever sits beside the corpus file (`app.py`, `.env`, `.git/config`). Instead, the corpus'
image files are looked up by their corpus-relative path in a table built from the corpus itself, so only a
file that some item references is served, never a hidden file, and no server path appears in a URL.
"""

from __future__ import annotations

import logging
import mimetypes
import secrets
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    from mmembed.corpus import Corpus
    from mmembed.types import Item

log = logging.getLogger("mmembed.ui")

ROUTE = "/corpus/"  # hits' image_url is ROUTE + the image's corpus-relative path


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in parts)


class CorpusFiles:
    """corpus-relative path <-> image file, for every item whose image is a file (and is not hidden)."""

    def __init__(self, corpus: Corpus) -> None:
        root = Path(corpus.root).resolve() if corpus.root is not None else None
        self._by_public: dict[str, Path] = {}
        self._by_id: dict[str, str] = {}
        for number, item in enumerate(corpus.items):
            if not isinstance(item.image, (str, Path)):
                continue  # an in-memory image (datasets): shown inline, never served as a file
            file = Path(item.image).resolve()
            public = self._public_name(file, root, number)
            if public is None:
                continue
            self._by_public.setdefault(public, file)
            self._by_id[item.id] = public

    @staticmethod
    def _public_name(file: Path, root: Path | None, number: int) -> str | None:
        try:
            parts = file.relative_to(root).parts if root is not None else ()
        except ValueError:
            parts = ()
        if not parts:
            # Outside the corpus folder (an --image-root elsewhere): a name that says nothing of the server's
            # folders, unique per item.
            parts = ("_external", str(number), file.name)
        return None if _is_hidden(parts) else PurePosixPath(*parts).as_posix()

    def public_path(self, item: Item) -> str | None:
        """The item's image as a corpus-relative path (what the API shows), or None without a served file."""
        return self._by_id.get(item.id)

    def url(self, item: Item) -> str | None:
        return self.url_of(self.public_path(item))

    def url_of(self, public: str | None) -> str | None:
        """The page URL of a corpus-relative image path that the corpus references, or None."""
        if not public or public not in self._by_public:
            return None
        return ROUTE + quote(public, safe="/")  # a name with '#', '?' or spaces still reaches the route

    def resolve(self, public: str | None) -> Path | None:
        """The file behind a corpus-relative path, or None if the corpus references no such image."""
        return self._by_public.get(public) if public else None

    def __len__(self) -> int:
        return len(self._by_public)


def corpus_route(files: Any) -> Any:
    """A Starlette route serving `ROUTE<path>` from `files` (a CorpusFiles, or a callable returning one, so
    the corpus can load lazily after the server started). Anything else gets 404, with no hint why."""
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    def serve(request: Any) -> Any:  # sync: Starlette runs it in a worker thread (the corpus may load now)
        try:
            table = files() if callable(files) else files
        except MMEmbedError as exc:  # no corpus yet (the page says why on the first search)
            log.info("corpus image requested but the corpus is unavailable: %s", exc)
            return PlainTextResponse("Not found", status_code=404)
        public = request.path_params.get("path", "")
        file = table.resolve(public) if table is not None else None
        if file is None or not file.is_file():
            return PlainTextResponse("Not found", status_code=404)
        media_type = mimetypes.guess_type(file.name)[0] or ""
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"}
        if not media_type.startswith("image/") or "svg" in media_type:
            # An image named x.html (PIL reads content, not names) must not render as a page of this site.
            media_type = "application/octet-stream"
            headers["Content-Disposition"] = "attachment"
        return FileResponse(file, media_type=media_type, headers=headers)

    return Route(ROUTE + "{path:path}", serve, methods=["GET", "HEAD"])


DOWNLOAD_ROUTE = "/download/"  # exports: ROUTE + an unguessable token, never a file name or server path


class Downloads:
    """Files written for one visitor (exports), offered under random tokens.

    Gradio's download components send the file's server path to the browser (`/gradio_api/file=/tmp/...`);
    a token says nothing of the server, and only the visitor who asked for the export learns it. The table
    is bounded: the oldest offers are forgotten (their files may also be gone already, evicted by the
    scratch disk's cap), and a forgotten or evicted export answers 404.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._offers: OrderedDict[str, tuple[Path, str]] = OrderedDict()
        self._lock = threading.Lock()

    def offer(self, file: str | Path, name: str | None = None) -> str:
        """The URL under which `file` downloads (as `name`, default its own file name)."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._offers[token] = (Path(file), name or Path(file).name)
            while len(self._offers) > self.limit:
                self._offers.popitem(last=False)
        return DOWNLOAD_ROUTE + token

    def resolve(self, token: str) -> tuple[Path, str] | None:
        with self._lock:
            return self._offers.get(token)


_DOWNLOAD_TYPES = {".json": "application/json", ".csv": "text/csv"}


def download_route(downloads: Downloads) -> Any:
    """A Starlette route serving `DOWNLOAD_ROUTE<token>` as an attachment; anything else gets 404."""
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    def serve(request: Any) -> Any:
        found = downloads.resolve(request.path_params.get("token", ""))
        if found is None or not found[0].is_file():
            return PlainTextResponse("Not found (exports are kept for a while only: export again)", status_code=404)
        file, name = found
        media_type = _DOWNLOAD_TYPES.get(file.suffix.lower(), "application/octet-stream")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"}
        # filename= makes Starlette send Content-Disposition: attachment (a download, never a page of this site)
        return FileResponse(file, media_type=media_type, filename=name, headers=headers)

    return Route(DOWNLOAD_ROUTE + "{token}", serve, methods=["GET", "HEAD"])
