"""The launched demo on a loopback port, probed as an operator's soak did (issue 9, items 1-4, 7 and 9):

1. only the corpus' own image files are served, never the files beside the corpus or hidden ones;
2. two clients uploading the same bytes under different names each see only their own file name;
3. responses carry corpus-relative paths and URLs only, and bad API input gets a message;
4. exports are written only on request, and the scratch disk stays under its cap;
9. a visitor's mistake is one line in the server log, not a traceback; a program fault keeps its traceback
   (in the log) and the visitor reads a plain message instead of Gradio's bare "Error".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from fakes import KeywordEmbedder
from PIL import Image
from ui_helpers import VOCAB, make_state

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from mmembed.ui import build_demo, launch_options  # noqa: E402

CAP_BYTES = 600_000


class BrokenEmbedder(KeywordEmbedder):
    def embed_items(self, items, *, progress=None):
        raise RuntimeError("a bug in the embedder")


def _png(path: Path, colour=(90, 90, 90), size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app with its corpus file in a "repository" folder that also holds code, a venv, git and secrets."""
    tmp = tmp_path_factory.mktemp("ui-privacy")
    state = make_state(tmp)
    repo = state.corpus_root()
    (repo / "app.py").write_text("SECRET_APP = 1\n")
    (repo / ".env").write_text("TOKEN=hunter2\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("[core]\n")
    _png(repo / "images" / "unreferenced.png")  # an image no item names is not served either
    state.embedders.register_instance("broken", BrokenEmbedder(VOCAB, name="broken"), "a fault of the program")
    scratch = tmp / "gradio-scratch"  # Gradio's upload folder, read when the Blocks and the app are made
    saved = {key: os.environ.get(key) for key in ("GRADIO_TEMP_DIR", "MMEMBED_UI_DISK_MB")}
    os.environ["GRADIO_TEMP_DIR"] = str(scratch)
    os.environ["MMEMBED_UI_DISK_MB"] = "1"
    try:
        from mmembed.ui.scratch import Scratch

        demo = build_demo(state)
        demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                    **launch_options(state, Scratch(scratch, CAP_BYTES)))
        yield demo, state, tmp, scratch
    finally:
        demo.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def base(served):
    return served[0].local_url.rstrip("/")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _call(base: str, api: str, data: list) -> tuple[str, dict]:
    """Raw HTTP call of a named endpoint, as any client can make it: (event kind, its data)."""
    request = urllib.request.Request(f"{base}/gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{base}/gradio_api/call/{api}/{event_id}", timeout=60) as response:
        lines = response.read().decode().splitlines()
    kind = next(line.split(": ", 1)[1] for line in lines if line.startswith("event: "))
    payload = next(line.split(": ", 1)[1] for line in lines if line.startswith("data: "))
    return kind, json.loads(payload)


def _search_args(**overrides):
    args = {"text": "cat", "image": None, "target": "image", "mode": "natural", "top_k": 4, "rerank_on": True,
            "embedder": "keyword", "reranker": "fake-reranker", "depth": 4}
    args.update(overrides)
    return args


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --- 1. what is served ----------------------------------------------------------------------------------

def test_corpus_images_are_served_by_their_corpus_relative_path(served, base):
    _, state, _, _ = served
    status, body = _get(f"{base}/corpus/images/cat.png")
    assert status == 200 and body == Path(state.corpus["i-cat"].image).read_bytes()


def test_nothing_beside_the_corpus_is_served(served, base):
    _, state, _, _ = served
    repo = state.corpus_root().resolve()
    names = ["app.py", ".env", ".venv/pyvenv.cfg", ".git/config", "corpus.jsonl", "images/unreferenced.png"]
    for name in names:
        assert _get(f"{base}/gradio_api/file={repo / name}")[0] in {403, 404}, name
        assert _get(f"{base}/corpus/{name}")[0] == 404, name
    # a served image is no way in to its neighbours
    for trick in ("images/../app.py", "images/%2e%2e/app.py", "images/..%2fapp.py", "%2e%2e/%2e%2e/etc/passwd",
                  "images/cat.png/../../.env", "/etc/passwd", "images//cat.png/.."):
        status, body = _get(f"{base}/corpus/{trick}")
        assert status in {403, 404} and b"SECRET" not in body and b"hunter2" not in body, trick
    assert _get(f"{base}/gradio_api/file={state.corpus_root().resolve() / 'images' / 'cat.png'}")[0] == 403


def test_a_hidden_image_the_corpus_names_is_not_served(tmp_path):
    from mmembed.corpus import load_mbeir_jsonl
    from mmembed.ui.files import CorpusFiles

    _png(tmp_path / ".private" / "face.png")
    _png(tmp_path / "ok.png")
    (tmp_path / "corpus.jsonl").write_text(
        '{"did": "a", "img_path": ".private/face.png", "modality": "image"}\n'
        '{"did": "b", "img_path": "ok.png", "modality": "image"}\n')
    corpus = load_mbeir_jsonl(tmp_path / "corpus.jsonl")
    files = CorpusFiles(corpus)
    assert files.public_path(corpus["a"]) is None and files.resolve(".private/face.png") is None
    assert files.url(corpus["b"]) == "/corpus/ok.png" and files.resolve("ok.png") == (tmp_path / "ok.png").resolve()


# --- 2. one visitor's upload never reaches another ------------------------------------------------------

def test_two_clients_uploading_the_same_bytes_see_only_their_own_file_name(served, tmp_path):
    demo = served[0]
    alice_file = _png(tmp_path / "alice" / "dog-alice-private-scan.png", (91, 92, 93))
    bob_file = tmp_path / "bob" / "dog-holiday.png"
    bob_file.parent.mkdir()
    bob_file.write_bytes(alice_file.read_bytes())  # the same bytes under another name
    alice = gradio_client.Client(demo.local_url, verbose=False)
    bob = gradio_client.Client(demo.local_url, verbose=False)
    first = alice.predict(**_search_args(text="", image=gradio_client.handle_file(str(alice_file))),
                          api_name="/search")
    second = bob.predict(**_search_args(text="", image=gradio_client.handle_file(str(bob_file))),
                         api_name="/search")
    assert first["query"]["image"] == "dog-alice-private-scan.png"
    assert second["cached"] is True  # the same bytes: the shared cache answered...
    assert second["query"]["image"] == "dog-holiday.png"  # ...with this visitor's own name
    assert "alice" not in json.dumps(second)
    assert second["first_stage"]["hits"] == first["first_stage"]["hits"]
    assert second["reranked"]["hits"] == first["reranked"]["hits"]
    # and through the page's own two-step events (first stage, then rerank into the session)
    page_first = bob.predict(text="", image=gradio_client.handle_file(str(bob_file)), target="image",
                             mode="natural", top_k=4, embedder="keyword", depth=4, api_name="/first_stage")
    assert "alice" not in json.dumps(page_first)


# --- 3. API hygiene -------------------------------------------------------------------------------------

def test_responses_carry_no_server_path(served, base, tmp_path):
    demo, _, tmp, _ = served
    client = gradio_client.Client(demo.local_url, verbose=False)
    query = _png(tmp_path / "cat-query.png", (200, 120, 40))
    out = client.predict(**_search_args(text="cat", image=gradio_client.handle_file(str(query)),
                                        target="image+text"), api_name="/search")
    hits = out["first_stage"]["hits"] + out["reranked"]["hits"]
    with_images = [hit for hit in hits if hit["image"]]
    assert with_images and all("image_file" not in hit for hit in hits)
    for hit in with_images:
        assert not Path(hit["image"]).is_absolute() and ".." not in Path(hit["image"]).parts
        assert hit["image_url"] == "/corpus/" + hit["image"]
        assert _get(base + hit["image_url"])[0] == 200
    server_roots = {str(tmp), str(tmp.resolve()), str(Path.cwd()), "/tmp/", str(Path.home())}
    for text in _strings(out):
        assert not any(root in text for root in server_roots), text
    assert out["query"]["image"] == "cat-query.png"


@pytest.mark.parametrize(("top_k", "shown"), [("abc", "'abc' (str)"), ([1], "[1] (list)")])
def test_a_wrong_type_is_named_not_null(base, top_k, shown):
    kind, data = _call(base, "search", ["cat", None, "image", "natural", top_k, True, "keyword", "fake-reranker", 4])
    assert kind == "error"
    assert data["error"] == f"/search: input 'top_k' must be a number, got {shown}."


def test_too_few_arguments_are_named_not_null(base):
    kind, data = _call(base, "search", ["cat"])
    assert kind == "error"
    assert data["error"] == ("/search takes 9 inputs (text, image, target, mode, top_k, rerank_on, embedder, "
                             "reranker, depth); got 1. Send every input, in this order.")


def test_a_bad_pasted_image_gets_a_plain_message(base):
    pasted = {"url": "data:image/png;base64,AAAAAAAA", "meta": {"_type": "gradio.FileData"}}
    kind, data = _call(base, "search", ["", pasted, "image", "natural", 4, True, "keyword", "fake-reranker", 4])
    assert kind == "error"
    assert data["error"] == ("The pasted image can't be used: it is not a PNG, JPEG, GIF, WebP or BMP image that "
                             "can be decoded. Paste or upload another one.")
    assert "0x" not in data["error"] and "&" not in data["error"]


# --- 4. bounded disk ------------------------------------------------------------------------------------

def _files(folder: Path) -> list[Path]:
    """Files under `folder`. os.walk, not rglob: the disk cap runs concurrently and may remove a whole
    sub-folder while it is being listed, which rglob turns into a FileNotFoundError and os.walk skips."""
    return [path for root, _, names in os.walk(folder) for path in (Path(root) / name for name in names)
            if path.is_file()]


def _total_size(folder: Path) -> int:
    """Bytes under `folder`; a file evicted between listing and stat (the cap runs concurrently) counts 0."""
    total = 0
    for path in _files(folder):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def test_exports_are_written_only_when_asked(served, tmp_path):
    demo, _, _, scratch = served
    client = gradio_client.Client(demo.local_url, verbose=False)
    exports = scratch / f"mmembed-exports-{os.getpid()}"
    before = set(_files(exports)) if exports.exists() else set()
    client.predict(text="dog", image=None, target="image", mode="natural", top_k=4, embedder="keyword", depth=4,
                   api_name="/first_stage")
    client.predict(**_search_args(text="dog"), api_name="/search")
    assert (set(_files(exports)) if exports.exists() else set()) == before  # searching writes no export
    url = client.predict(api_name="/export")
    new = set(_files(exports)) - before
    assert len(new) == 1
    assert [path.name for path in _files(scratch) if path.suffix == ".json"].count(next(iter(new)).name) == 1
    # the export comes back as a token URL of its own route, not as Gradio's file (which names its server path)
    assert url.startswith("/download/") and "tmp" not in url and "json" not in url
    base = demo.local_url.rstrip("/")
    with urllib.request.urlopen(base + url, timeout=20) as response:
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["Content-Type"].startswith("application/json")
        exported = json.loads(response.read())
    assert exported["query"]["text"] == "dog" and exported["first_stage"]["hits"][0]["id"] == "t-dog"
    assert _get(base + "/download/not-a-token")[0] == 404
    assert _get(base + url.replace("/download/", "/download/x"))[0] == 404


def test_the_detail_picture_comes_from_the_corpus_route(served, base):
    """The details panel's full image is an <img> of the corpus route, not a Gradio file with a temp path."""
    from mmembed.ui import handlers as h
    from mmembed.ui.events import DemoEvents
    from mmembed.ui.scratch import Scratch

    _, state, tmp, scratch = served
    events = DemoEvents(state, Scratch(scratch, CAP_BYTES))
    report = h.first_stage(state, h.parse_request("cat", None, "image", "natural", 4, "keyword", 4, state=state))
    details, picture = events.details(report, "i-cat")
    assert 'src="/corpus/images/cat.png"' in picture and _get(base + "/corpus/images/cat.png")[0] == 200
    for root in (str(tmp), str(tmp.resolve()), "/tmp/"):
        assert root not in details and root not in picture
    assert events.details(report, "t-cat")[1] == ""  # a text item: no picture


def test_uploads_are_capped_oldest_first(served):
    demo, _, _, scratch = served
    base = demo.local_url.rstrip("/")
    uploaded = []
    for number in range(8):  # 8 x 200 kB of incompressible data against a 600 kB cap
        body = os.urandom(200_000)
        boundary = "mmembedtestboundary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"u{number}.bin\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{base}/gradio_api/upload", data=form,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=20) as response:
            uploaded.append(Path(json.loads(response.read())[0]))
        time.sleep(0.3)
    time.sleep(2.5)  # past the newest files' grace period; the next upload triggers the check
    request.data = form
    with urllib.request.urlopen(request, timeout=20):
        pass
    deadline = time.time() + 10
    while _total_size(scratch) > CAP_BYTES and time.time() < deadline:
        time.sleep(0.2)
    assert _total_size(scratch) <= CAP_BYTES
    assert not uploaded[0].exists() and not uploaded[1].exists()  # the oldest went first


# --- 9. logs --------------------------------------------------------------------------------------------

def test_a_visitor_mistake_is_one_log_line_without_traceback(base, caplog, capfd):
    with caplog.at_level(logging.INFO, logger="mmembed.ui"):
        kind, data = _call(base, "search", ["   ", None, "image", "natural", 4, True, "keyword", "fake-reranker", 4])
        _call(base, "search", ["cat"])
    assert kind == "error" and data["error"].startswith("Enter a query")
    lines = [record.getMessage() for record in caplog.records if record.name == "mmembed.ui"]
    assert lines == ["user error in search: Enter a query: type some text, add an image, or both.",
                     "user error in search: /search takes 9 inputs (text, image, target, mode, top_k, rerank_on, "
                     "embedder, reranker, depth); got 1. Send every input, in this order."]
    err = capfd.readouterr().err
    assert "Traceback" not in err


def test_a_program_fault_keeps_its_traceback_and_tells_the_visitor_plainly(base, caplog, capfd):
    with caplog.at_level(logging.INFO, logger="mmembed.ui"):
        kind, data = _call(base, "search", ["cat", None, "image", "natural", 4, False, "broken", "fake-reranker", 4])
    assert kind == "error"
    assert data["error"] == ("Something went wrong on the server, not with your query; it has been logged. Try "
                             "again, or pick another model.")
    (record,) = [r for r in caplog.records if r.name == "mmembed.ui"]
    assert record.getMessage() == "fault in search" and record.exc_info is not None
    assert "RuntimeError: a bug in the embedder" in caplog.text  # the traceback, for the operator
    assert "Traceback" not in capfd.readouterr().err  # once, in our log: Gradio prints none of its own
