"""Backbone features of the training images for a frozen pretrained image tower, computed once and cached.

With the backbone frozen, only the head on top of it trains, so every image is run through the backbone
once per view (view 0 as is, the others augmented towards photographs) instead of at every step: the
stages then cost seconds per hundred steps instead of minutes. Features are cached on disk by image
content, backbone weights, input size and view count; a rebuilt training set reuses what it can.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch


def _backbone_id(tower) -> str:
    """The backbone's identity at float16 precision: shipped models store the frozen backbone in float16,
    so the float32 ImageNet weights and their float16 copy share one cache (features differ by rounding)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tower.backbone.state_dict().items()):
        digest.update(name.encode())
        value = tensor.detach().cpu()
        digest.update((value.half() if value.is_floating_point() else value).numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def backbone_features(tower, images: np.ndarray, views: int, cache_dir: Path | None,
                      progress: Callable[[int, int, str], None] | None = None, batch: int = 64) -> torch.Tensor:
    """(n, views, d) float16 features of `images` ((n, s, s, 3) uint8)."""
    import numpy as np
    import torch

    from mmembed.train.augment import augment

    keys = [hashlib.sha256(image.tobytes()).digest()[:16] for image in images]
    size = images.shape[1] if len(images) else 0
    known: dict[bytes, np.ndarray] = {}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"features-{_backbone_id(tower)}-{size}px-{views}v.safetensors"
        if path.is_file():
            from safetensors.numpy import load_file

            try:
                stored = load_file(str(path))
                known = {bytes(k): v for k, v in zip(stored["keys"], stored["features"], strict=True)}
            except Exception as exc:  # unreadable cache: recompute, never half-use it
                print(f"feature cache {path} unreadable ({exc}); recomputing", file=sys.stderr)
    todo = [i for i, k in enumerate(keys) if k not in known]
    tower.eval()
    with torch.inference_mode():
        for start in range(0, len(todo), batch):
            rows = todo[start : start + batch]
            pixels = torch.from_numpy(np.ascontiguousarray(images[rows])).permute(0, 3, 1, 2).float() / 255.0
            parts = []
            for view in range(views):
                if view == 0:
                    x = pixels
                else:  # seeded by the batch's first image and the view: a rerun draws the same views
                    generator = torch.Generator().manual_seed(int.from_bytes(keys[rows[0]][:6], "big") * 31 + view)
                    x = augment(pixels, generator, photo=True)
                parts.append(tower.features(x).numpy().astype(np.float16))
            out = np.stack(parts, axis=1)
            for i, row in enumerate(rows):
                known[keys[row]] = out[i]
            if progress is not None:
                progress(min(start + batch, len(todo)), len(todo), "image features (frozen backbone)")
    if todo and path is not None:
        from safetensors.numpy import save_file

        from mmembed.storage import atomic_write

        items = sorted(known.items())
        tensors = {"keys": np.frombuffer(b"".join(k for k, _ in items), dtype=np.uint8).reshape(len(items), 16),
                   "features": np.ascontiguousarray(np.stack([v for _, v in items]))}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    if not keys:
        return torch.zeros(0, views, 0, dtype=torch.float16)
    return torch.from_numpy(np.stack([known[k] for k in keys]))
