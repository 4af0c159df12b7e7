"""The model-free test doubles live in the package (mmembed.testing), so benchmarks can use them too."""

from mmembed.testing import (
    DebiasedKeywordEmbedder,
    FakeReranker,
    KeywordEmbedder,
    ModalityReranker,
    keywords_of_image,
)

__all__ = ["DebiasedKeywordEmbedder", "FakeReranker", "KeywordEmbedder", "ModalityReranker", "keywords_of_image"]
