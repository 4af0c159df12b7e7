"""The launched demo through gradio_client: the named `search` endpoint, its errors, and what is served."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from ui_helpers import make_state

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from mmembed.ui import build_demo, launch_options  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-api")
    state = make_state(tmp)
    demo = build_demo(state)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(state))
    try:
        yield demo, state, tmp
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served):
    return gradio_client.Client(served[0].local_url, verbose=False)


def _search(client, **overrides):
    args = {"text": "cat", "image": None, "target": "image", "mode": "natural", "top_k": 4, "rerank_on": True,
            "embedder": "keyword", "reranker": "fake-reranker", "depth": 4}
    args.update(overrides)
    return client.predict(**args, api_name="/search")


def test_search_endpoint_returns_both_stages(client):
    out = _search(client)
    assert [hit["id"] for hit in out["first_stage"]["hits"]] == ["t-cat", "it-cat", "t-cat-mat", "i-cat"]
    assert out["first_stage"]["wrong_modality_rate"] == pytest.approx(0.75)
    assert out["reranked"]["status"] == "done"
    assert [hit["movement_label"] for hit in out["reranked"]["hits"]] == ["=", "=", "=", "="]
    assert {row["label"] for row in out["reranked"]["modality_mix"]} == {"text", "image", "image+text"}
    assert out["query"]["target"] == "image" and out["pool"]["size"] == 10


def test_search_hits_carry_a_fetchable_image_url(served, client):
    demo, state, _ = served
    hit = next(hit for hit in _search(client, rerank_on=False)["first_stage"]["hits"] if hit["id"] == "i-cat")
    assert hit["image"] == "images/cat.png"
    with urllib.request.urlopen(demo.local_url.rstrip("/") + hit["image_url"], timeout=10) as response:
        assert response.read() == Path(state.corpus["i-cat"].image).read_bytes()


def test_search_endpoint_takes_an_image(client, tmp_path):
    query = tmp_path / "dog.png"  # the keyword fake reads keywords from the file name
    Image.new("RGB", (32, 32), (90, 90, 90)).save(query)
    out = _search(client, text="", image=gradio_client.handle_file(str(query)), target="image", rerank_on=False)
    assert out["query"]["modality"] == "image"
    assert out["first_stage"]["hits"][0]["id"] == "i-dog"
    assert out["reranked"]["status"] == "off"


def test_search_endpoint_reports_bad_input(client, tmp_path):
    with pytest.raises(Exception, match="Enter a query"):
        _search(client, text="   ")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match=r"The uploaded image can't be used: empty.png is empty \(0 bytes\)"):
        _search(client, text="", image=gradio_client.handle_file(str(empty)))


def test_api_lists_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/search", "/first_stage", "/rerank", "/details", "/evaluate"}  # plumbing is undocumented
    names = [p["parameter_name"] for p in endpoints["/search"]["parameters"]]
    assert names[:6] == ["text", "image", "target", "mode", "top_k", "rerank_on"]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_corpus_images_are_served(served):
    demo, state, tmp = served
    base = demo.local_url.rstrip("/")
    corpus_image = Path(state.corpus["i-cat"].image)
    assert _status(f"{base}/corpus/images/cat.png") == 200
    assert _status(f"{base}/gradio_api/file={corpus_image}") == 403  # by reference only, not by folder
    secret = tmp / "secret.txt"
    secret.write_text("not for visitors")
    for path in (secret, Path(__file__).resolve(), Path("/etc/passwd")):
        assert _status(f"{base}/gradio_api/file={path}") in {403, 404}, path


def test_uploads_over_the_cap_are_refused(client, tmp_path):
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (11 * 1024 * 1024))  # over launch_options' 10 MB
    with pytest.raises(Exception, match="exceeds the maximum file size of 10485760 bytes"):
        _search(client, text="", image=gradio_client.handle_file(str(big)))
