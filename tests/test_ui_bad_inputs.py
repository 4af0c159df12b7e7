"""Bad input never breaks the demo: each case gets a clear message, or is handled correctly."""

from __future__ import annotations

import struct
import zlib

import pytest
from fakes import KeywordEmbedder
from PIL import Image
from ui_helpers import VOCAB, make_state

from mmembed.embedders.base import QueryInfo
from mmembed.ui import handlers as h


@pytest.fixture
def state(tmp_path):
    return make_state(tmp_path)


def search(state, text="", image=None, **overrides):
    args = {"target": "image", "mode": "natural", "top_k": 3, "rerank_enabled": True, "embedder": "keyword",
            "reranker": "fake-reranker"}
    args.update(overrides)
    return h.search(state, text, None if image is None else str(image), **args)


def _png_with_size(path, width, height):
    """A valid-looking PNG whose header claims width x height (a decompression bomb's signature)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("text", ["", "   \n\t", None])
def test_empty_query(state, text):
    with pytest.raises(h.UserInputError, match=r"^Enter a query: type some text, add an image, or both\.$"):
        search(state, text)


def test_overlong_text(state):
    with pytest.raises(h.UserInputError, match=r"The query text is 2,001 characters long; the limit is 2,000"):
        search(state, "cat " * 500 + "d")


def test_text_over_the_models_limit_is_truncated_with_a_note(state):
    class Truncating(KeywordEmbedder):
        def describe_query(self, query):
            return QueryInfo(instruction="Find an image.", notes=("text truncated to 77 tokens",))

    state.embedders.register_instance("truncating", Truncating(VOCAB, text_bias=0.8, name="truncating"))
    out = search(state, "cat " * 300, embedder="truncating")
    assert out["notes"] == ["text truncated to 77 tokens"]
    assert out["instruction"] == "Find an image."
    assert out["first_stage"]["hits"][0]["id"] == "i-cat"  # 300 x "cat" outweighs the text bias
    # the truncation pops up (it concerns what the visitor typed); routine notes stay in the status line
    assert h.notes_to_toast(["image read at 64x64 px", "text truncated to 77 tokens",
                             "clip-b32 takes no instructions; the instruction was ignored"]) == [
        "text truncated to 77 tokens"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"top_k": 0}, "top-k must be between 1 and 50, got 0"),
        ({"top_k": 51}, "top-k must be between 1 and 50, got 51"),
        ({"top_k": "many"}, "top-k must be a whole number, got 'many'"),
        ({"target": "video"}, "Unknown target modality 'video'; choose image, text or image+text."),
        ({"mode": "fuzzy"}, "Unknown mode 'fuzzy'; choose natural or filtered."),
    ],
)
def test_bad_settings(state, overrides, message):
    with pytest.raises(h.UserInputError) as info:
        search(state, "cat", **overrides)
    assert str(info.value) == message


def test_zero_byte_upload(state, tmp_path):
    empty = tmp_path / "cat.png"
    empty.write_bytes(b"")
    with pytest.raises(h.UserInputError, match=r"^The uploaded image can't be used: cat.png is empty \(0 bytes\)$"):
        search(state, image=empty)


def test_text_file_named_png(state, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    with pytest.raises(h.UserInputError, match="notes.png is not an image file Pillow can read"):
        search(state, image=fake)


def test_corrupt_png(state, tmp_path):
    path = tmp_path / "broken.png"
    Image.new("RGB", (64, 64), "red").save(path)
    path.write_bytes(path.read_bytes()[:60])  # truncated mid-data
    with pytest.raises(h.UserInputError, match="The uploaded image can't be used: broken.png"):
        search(state, image=path)


def test_decompression_bomb(state, tmp_path):
    bomb = _png_with_size(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(h.UserInputError) as info:
        search(state, image=bomb)
    assert str(info.value) == ("The uploaded image can't be used: bomb.png is too large to decode safely "
                               "(possible decompression bomb)")
    big = _png_with_size(tmp_path / "big.png", 9_000, 9_000)  # under Pillow's own guard, over ours
    with pytest.raises(h.UserInputError, match=r"big.png is 9000x9000 pixels \(81 MP\); the limit is 40 MP"):
        search(state, image=big)


def test_sixteen_bit_png_is_searched(state, tmp_path):
    path = tmp_path / "cat_16bit.png"
    Image.new("I;16", (20, 20), 40000).save(path)
    out = search(state, image=path)
    assert out["query"]["modality"] == "image"
    assert out["first_stage"]["hits"][0]["id"] == "i-cat"


def test_cmyk_jpeg_is_searched(state, tmp_path):
    path = tmp_path / "cat_cmyk.jpg"
    Image.new("CMYK", (20, 20), (0, 50, 100, 0)).save(path)
    assert search(state, image=path)["first_stage"]["hits"][0]["id"] == "i-cat"


def test_animated_palette_gif_is_searched(state, tmp_path):
    path = tmp_path / "dog_anim.gif"
    frames = [Image.new("P", (20, 20), i) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert search(state, image=path)["first_stage"]["hits"][0]["id"] == "i-dog"


def test_palette_png_with_transparency_is_searched(state, tmp_path):
    path = tmp_path / "boat_palette.png"
    image = Image.new("P", (20, 20), 1)
    image.putpalette([255, 255, 255, 20, 60, 200] + [0, 0, 0] * 254)
    image.info["transparency"] = 0  # palette transparency: Pillow warns unless it goes through RGBA
    image.save(path, transparency=0)
    out = search(state, image=path)
    assert out["query"]["modality"] == "image"
    assert out["first_stage"]["hits"][0]["id"] == "i-boat"


def test_exif_rotated_photo_is_searched_upright(state, tmp_path):
    from mmembed.images import load_image

    path = tmp_path / "boat_rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    Image.new("RGB", (40, 20), "blue").save(path, exif=exif.tobytes())
    assert load_image(path).size == (20, 40)  # what the embedder sees is upright
    out = search(state, "boat", image=path)
    assert out["query"]["modality"] == "image,text"
    assert out["first_stage"]["hits"][0]["id"] == "i-boat"


def test_text_and_bad_image_reports_the_image(state, tmp_path):
    empty = tmp_path / "x.png"
    empty.write_bytes(b"")
    with pytest.raises(h.UserInputError, match="x.png is empty"):
        search(state, "cat", image=empty)


def test_error_shown_in_the_page_is_escaped():
    gr = pytest.importorskip("gradio")
    from mmembed.ui.events import user_error

    error = user_error(h.UserInputError("bad <img src=x onerror=alert(1)>.png"))
    assert isinstance(error, gr.Error)
    assert error.message == "bad &lt;img src=x onerror=alert(1)&gt;.png"
