"""mmembed-mini's image preparation, shared by the training-set builder, the trainer and MiniEmbedder.

Clip art and photos alike become a square RGB image of `size` pixels: transparency is composited onto
white (clip art is drawn on transparent canvases), the whole picture is kept (fit, not crop) and padded
with white. Using the very same function at training and inference time keeps the image tower honest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image as PILImage


def prepare_image(image: PILImage, size: int) -> PILImage:
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    image = image.convert("RGB")
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    if image.size == (size, size):
        return image
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(image, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return square


def image_array(image: PILImage, size: int) -> np.ndarray:
    """(size, size, 3) uint8 array of the prepared image."""
    import numpy as np

    return np.asarray(prepare_image(image, size), dtype=np.uint8)
