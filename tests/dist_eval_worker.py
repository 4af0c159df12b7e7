"""A torchrun worker for tests/test_distributed_eval.py: `python -m mmembed eval ARGS...` with the keyword fakes.

    python -m torch.distributed.run --nproc-per-node 2 tests/dist_eval_worker.py eval --embedder biased ...

The embedders "biased" and "debiased" and the reranker "modality-reranker" are the model-free fakes of
mmembed.testing (rankings known in advance), installed in the registries before the real command line runs;
the test installs the same ones in its own process for the one-process run it compares with.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import DebiasedKeywordEmbedder, KeywordEmbedder, ModalityReranker
from retrieval_helpers import VOCAB

from mmembed.embedders import EMBEDDERS
from mmembed.rerankers import RERANKERS

RERANKER = ModalityReranker.name


def install_fakes(set_attribute: Callable[[Any, str, Any], None] = setattr) -> None:
    """Route the registries' lookups of the fake names to the fakes (unknown names still raise as for real);
    `set_attribute` is pytest's monkeypatch.setattr in the test process, plain setattr in a worker."""
    embedders = {"biased": KeywordEmbedder(VOCAB, text_bias=0.8, name="biased"),
                 "debiased": DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="debiased")}
    reranker = ModalityReranker()
    get_embedder, get_reranker, reason = EMBEDDERS.get, RERANKERS.get, RERANKERS.unavailable_reason
    set_attribute(EMBEDDERS, "get", lambda name, **options: embedders[name] if name in embedders
                  else get_embedder(name, **options))
    set_attribute(RERANKERS, "get", lambda name, **options: reranker if name == RERANKER
                  else get_reranker(name, **options))
    set_attribute(RERANKERS, "unavailable_reason", lambda name, **options: None if name == RERANKER
                  else reason(name, **options))


if __name__ == "__main__":
    from mmembed.cli import main

    install_fakes()
    sys.exit(main(sys.argv[1:]))
