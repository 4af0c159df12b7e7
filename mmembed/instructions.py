"""Task instructions keyed by (query modality, target modality), in the style of M-BEIR's instruction file.

Instruction-following embedders (MM-Embed, GME, mmembed-mini) prepend the instruction to the query,
so choosing "image" as the target changes what the model is asked for: this is how the paper steers
a universal retriever towards the wanted modality. A user-provided `Query.instruction` wins.
"""

from __future__ import annotations

from mmembed.types import Modality, Query

T, I, IT = Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT  # noqa: E741 (M-BEIR shorthand)

INSTRUCTIONS: dict[tuple[Modality, Modality | None], str] = {
    (T, T): "Retrieve a text passage that answers or describes the given text.",
    (T, I): "Retrieve an image that matches the given caption.",
    (T, IT): "Retrieve an image with its caption that matches the given text.",
    (I, T): "Retrieve a caption or text passage that describes the given image.",
    (I, I): "Retrieve an image that is similar to the given image.",
    (I, IT): "Retrieve an image with its description that relates to the given image.",
    (IT, T): "Retrieve a text passage that answers the question about the given image.",
    (IT, I): "Retrieve an image that matches the given image changed as the text describes.",
    (IT, IT): "Retrieve an image with its description that matches the given image and text.",
    (T, None): "Retrieve a text, image or image with text that matches the given text.",
    (I, None): "Retrieve a text, image or image with text that matches the given image.",
    (IT, None): "Retrieve a text, image or image with text that matches the given image and text.",
}


def instruction_for(query: Query, target: Modality | None = None) -> str:
    """The instruction for `query` asking for `target` (default: the query's own target)."""
    if query.instruction and query.instruction.strip():
        return query.instruction.strip()
    wanted = target if target is not None else query.target
    return INSTRUCTIONS[(query.modality, wanted)]
