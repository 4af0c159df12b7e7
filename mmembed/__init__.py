"""mmembed: universal multimodal retrieval with multimodal LLMs.

Importing this package is cheap: torch, transformers and faiss are imported only by the functions
that need them.
"""

from mmembed.types import Hit, Item, MMEmbedError, Modality, Query, ValidationError

__version__ = "0.1.0"

__all__ = ["Hit", "Item", "MMEmbedError", "Modality", "Query", "ValidationError", "__version__"]
