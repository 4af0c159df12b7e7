"""Architectures this project owns, one module per model: what inference (embedders/) and training (train/)
both import. Training code imports these, never the reverse, so serving a model never loads the trainer.

    mini.py         mmembed-mini: config, the nn.Modules, load/save of a model directory
    minilm.py       its locked text tower (all-MiniLM-L6-v2 from an installed package)
    mini_images.py  its image preparation, shared by the training-set builder, the trainer and the embedder
    mini_rerank.py  mmembed-mini-rerank: the offline cross-encoder (MiniLM layers + the tower's image tokens)
"""
