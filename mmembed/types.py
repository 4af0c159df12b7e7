"""The small value types every part of mmembed passes around.

Modalities use M-BEIR's vocabulary (`text`, `image`, `image,text`) so that M-BEIR files load as they
are; `Modality.label` gives the display form ("image+text"). All types are frozen dataclasses that
validate themselves on construction, so a bad item fails where it is made, with a message that says
what is wrong, instead of deep inside an embedder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PIL is only needed by code that actually opens images.
    from PIL.Image import Image as PILImage


class MMEmbedError(Exception):
    """Base class of the errors mmembed raises on purpose; the CLI prints these as one line."""


class ValidationError(MMEmbedError, ValueError):
    """An item, query or corpus row that cannot be used as given."""


class Modality(str, enum.Enum):
    """What an item or query holds. Values are M-BEIR's strings."""

    TEXT = "text"
    IMAGE = "image"
    IMAGE_TEXT = "image,text"

    @property
    def label(self) -> str:
        """Human-facing name: 'text', 'image' or 'image+text'."""
        return "image+text" if self is Modality.IMAGE_TEXT else self.value

    @property
    def has_text(self) -> bool:
        return self is not Modality.IMAGE

    @property
    def has_image(self) -> bool:
        return self is not Modality.TEXT

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Accept M-BEIR strings and the friendly spellings people type ('image+text', 'it', ...)."""
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower().replace(" ", "")
        aliases = {
            "text": cls.TEXT,
            "t": cls.TEXT,
            "txt": cls.TEXT,
            "image": cls.IMAGE,
            "i": cls.IMAGE,
            "img": cls.IMAGE,
            "image,text": cls.IMAGE_TEXT,
            "image+text": cls.IMAGE_TEXT,
            "text,image": cls.IMAGE_TEXT,
            "text+image": cls.IMAGE_TEXT,
            "it": cls.IMAGE_TEXT,
            "(i,t)": cls.IMAGE_TEXT,
        }
        if key not in aliases:
            known = ", ".join(m.value for m in cls)
            raise ValidationError(f"unknown modality {value!r}; expected one of: {known} (or 'image+text')")
        return aliases[key]

    @classmethod
    def of(cls, text: str | None, image: object | None) -> Modality:
        """The modality implied by which fields are present."""
        has_text = bool(text and text.strip())
        if has_text and image is not None:
            return cls.IMAGE_TEXT
        if image is not None:
            return cls.IMAGE
        if has_text:
            return cls.TEXT
        raise ValidationError("needs text, an image, or both; got neither")


def _check_content(what: str, text: str | None, image: object | None) -> None:
    if text is not None and not isinstance(text, str):
        raise ValidationError(f"{what}: text must be a string, got {type(text).__name__}")
    if image is not None and not isinstance(image, (str, Path)) and not hasattr(image, "convert"):
        raise ValidationError(f"{what}: image must be a path or a PIL image, got {type(image).__name__}")
    if not (text and text.strip()) and image is None:
        raise ValidationError(f"{what}: needs text, an image, or both; got neither")


@dataclass(frozen=True)
class Item:
    """One candidate of the corpus (M-BEIR: a row of the candidate pool).

    `image` is a path (absolute, or already resolved against the corpus file) or a PIL image.
    `modality` defaults to what the fields imply; when given, it must agree with them.
    `meta` carries free-form extras such as source and licence for the UI's detail view.
    """

    id: str
    text: str | None = None
    image: str | Path | PILImage | None = None
    modality: Modality | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValidationError(f"item id must be a non-empty string, got {self.id!r}")
        _check_content(f"item {self.id!r}", self.text, self.image)
        implied = Modality.of(self.text, self.image)
        if self.modality is None:
            object.__setattr__(self, "modality", implied)
        else:
            declared = Modality.parse(self.modality)
            object.__setattr__(self, "modality", declared)
            if declared is not implied:
                raise ValidationError(
                    f"item {self.id!r}: modality {declared.value!r} does not match the fields present "
                    f"({implied.value!r})"
                )


@dataclass(frozen=True)
class Query:
    """A search request: text and/or image, and the modality the user wants back.

    `target` None means "any modality". `instruction` overrides the task instruction that
    instruction-following embedders would otherwise pick from the (query, target) table.
    """

    text: str | None = None
    image: str | Path | PILImage | None = None
    target: Modality | None = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.text, str) and not self.text.strip():
            object.__setattr__(self, "text", None)
        _check_content("query", self.text, self.image)
        if self.target is not None:
            object.__setattr__(self, "target", Modality.parse(self.target))

    @property
    def modality(self) -> Modality:
        return Modality.of(self.text, self.image)


@dataclass(frozen=True)
class Hit:
    """One ranked result.

    `rank` is 1-based. After reranking, `score` is the reranker's (or fused) score, `first_stage_score`
    keeps the retriever's, and `original_rank` the rank the item had before reranking.
    """

    item: Item
    score: float
    rank: int
    first_stage_score: float | None = None
    original_rank: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def movement(self) -> int | None:
        """Positive when the item moved up in reranking (e.g. 5 -> 2 gives +3); None before reranking."""
        if self.original_rank is None:
            return None
        return self.original_rank - self.rank
