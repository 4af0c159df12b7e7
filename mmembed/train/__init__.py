"""The MM-Embed training recipe, runnable on a CPU: contrastive training with random negatives (M_rand),
modality-aware hard negative mining with that model, retraining with the mined negatives (M_hard) and
continual fine-tuning on text->text mixed with multimodal data (M_hard+ct).

Submodules import torch lazily at function level where they can, so `import mmembed.train` is cheap.
"""
