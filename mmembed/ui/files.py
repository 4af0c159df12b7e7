"""The corpus images the page may serve, by corpus-relative path, and the route that serves them.

Gradio's own `file=` route serves whole folders (`allowed_paths`): pointing it at the corpus folder would
also serve whatever sits beside the corpus file (`app.py`, `.env`, `.git/config`). Instead, the corpus'
image files are looked up by their corpus-relative path in a table built from the corpus itself, so only a
file that some item references is served, never a hidden file, and no server path appears in a URL.
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

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
        public = self.public_path(item)
        return ROUTE + public if public is not None else None

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
