"""load_image must turn every odd image into an upright RGB picture, or fail with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmembed.images import MAX_PIXELS, ImageLoadError, load_image


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="image file not found"):
        load_image(tmp_path / "nope.png")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty.png is empty \(0 bytes\)"):
        load_image(path)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ImageLoadError, match="notes.png is not an image file"):
        load_image(path)


def test_truncated_image(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(broken)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    side = int(MAX_PIXELS**0.5) + 100
    Image.new("1", (side, side)).save(path)  # 1-bit: tiny file, huge pixel count
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageLoadError, match=r"bomb.png is \d+x\d+ pixels .* the limit is 40 MP"):
        load_image(path)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    image = load_image(path)
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((5, 5))
    assert red > 200 and green < 60 and blue < 60


def test_16bit_greyscale_keeps_its_range(tmp_path):
    path = tmp_path / "deep.png"
    data = np.linspace(0, 65535, 32 * 32, dtype=np.uint16).reshape(32, 32)
    Image.fromarray(data).save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    values = np.asarray(image)[..., 0]
    assert values.min() == 0 and values.max() == 255  # not clipped to white


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "pal.png"
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_uses_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    red, _, blue = load_image(path).getpixel((8, 8))
    assert red > 200 and blue < 50


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (40, 20), (0, 128, 0))  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_pil_input_and_downscale():
    image = load_image(Image.new("RGBA", (1000, 500)), max_side=100)
    assert image.mode == "RGB" and image.size == (100, 50)


def test_wrong_type():
    with pytest.raises(ImageLoadError, match="expected an image path or a PIL image, got int"):
        load_image(42)  # type: ignore[arg-type]
