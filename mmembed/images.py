"""Open any image a user or a corpus hands us, safely, as an RGB PIL image.

Every model and the UI go through `load_image`, so the hard cases are handled once: paths that do
not exist, zero-byte or non-image files, decompression bombs, CMYK / 16-bit / palette / transparent
images, animated images (first frame), and EXIF-rotated photos (turned upright).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Pillow's own bomb guard warns at ~89 MP and raises at twice that; we refuse anything over this many
# pixels outright: no honest photo a demo visitor uploads is larger, and decoding one costs GBs.
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 25 * 1024 * 1024


class ImageLoadError(MMEmbedError, ValueError):
    """The image cannot be used; the message says why in words a user understands."""


def load_image(source: str | Path | PILImage, *, max_side: int | None = None) -> PILImage:
    """Return `source` as an upright RGB image, downscaled so its longest side is <= `max_side`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = "the image"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise ImageLoadError(f"image file not found: {path}")
        size = path.stat().st_size
        if size == 0:
            raise ImageLoadError(f"{name} is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageLoadError(f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(path)
                _check_pixels(image, name)
                image.load()
        except ImageLoadError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(_explain(exc, name)) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"{name} could not be read as an image ({exc})") from exc
    elif hasattr(source, "convert"):
        image = source
        _check_pixels(image, name)
    else:
        raise ImageLoadError(f"expected an image path or a PIL image, got {type(source).__name__}")

    try:
        if getattr(image, "is_animated", False):
            image.seek(0)  # animated GIF/WebP/PNG: the first frame stands for the image
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
    except ImageLoadError:
        raise
    except Exception as exc:  # truncated data surfaces only when pixels are decoded
        raise ImageLoadError(f"{name} could not be decoded ({exc})") from exc
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def _check_pixels(image: PILImage, name: str) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{name} has no pixels")
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
            f"the limit is {MAX_PIXELS / 1e6:.0f} MP"
        )


def _to_rgb(image: PILImage) -> PILImage:
    """RGB for every mode Pillow knows: CMYK, 16-bit grey (I;16), 32-bit int/float, palette, alpha."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        # Scale the real value range into 8 bits; a plain convert("L") clips 16-bit data to white.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype("uint8"), mode="L").convert("RGB")
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent -> white, as browsers show it
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _explain(exc: BaseException, name: str) -> str:
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return f"{name} is not an image file Pillow can read"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"{name} is too large to decode safely (possible decompression bomb)"
    return f"{name} could not be read ({exc})"
