"""Ship a trained stage as the offline model: assets/mmembed-mini/ (weights, config, training manifest).

The manifest (training_sources.txt, training_image_hashes.txt) lists every source key and image hash the
model was trained on, so the train/eval disjointness test can run on any checkout, without the training
set (which is rebuilt from the Debian packages, not committed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmembed.models.mini import CONFIG_NAME, WEIGHTS_NAME, load_model_dir, weights_fingerprint
from mmembed.storage import atomic_copy, atomic_write_json
from mmembed.types import MMEmbedError

MAX_BYTES = 50 * 1024 * 1024


def export_model(model_dir: Path, data_dir: Path, dest: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    model_dir, data_dir, dest = Path(model_dir), Path(data_dir), Path(dest)
    load_model_dir(model_dir)  # refuse to ship anything that does not load
    for name in ("sources.txt", "image_hashes.txt", "manifest.json"):
        if not (data_dir / name).is_file():
            raise MMEmbedError(f"{data_dir} lacks {name}; export needs the training set the model was trained on")
    size = (model_dir / WEIGHTS_NAME).stat().st_size
    if size > MAX_BYTES:
        raise MMEmbedError(f"{model_dir / WEIGHTS_NAME} is {size / 2**20:.1f} MB; the shipped model must be <= 50 MB")
    dest.mkdir(parents=True, exist_ok=True)
    config = json.loads((model_dir / CONFIG_NAME).read_text())
    manifest = json.loads((data_dir / "manifest.json").read_text())
    config["training_set"] = {k: manifest.get(k) for k in ("fingerprint", "clipart", "wordnet", "pool", "queries",
                                                            "tasks", "licenses")}
    config.update(extra or {})
    _write_half(model_dir / WEIGHTS_NAME, dest / WEIGHTS_NAME)
    config["weights_dtype"] = "float16"
    copies = {"train_log.json": model_dir / "train_log.json",
              "training_sources.txt": data_dir / "sources.txt",
              "training_image_hashes.txt": data_dir / "image_hashes.txt"}
    for name, source in copies.items():
        if source.is_file():
            atomic_copy(source, dest / name)  # 0644: shipped files must be readable by everyone
    config["fingerprint"] = weights_fingerprint(dest / WEIGHTS_NAME)
    atomic_write_json(dest / CONFIG_NAME, config, sort_keys=False)
    return {"dest": str(dest), "fingerprint": config["fingerprint"], "bytes": sum(
        p.stat().st_size for p in dest.iterdir() if p.is_file())}


def _write_half(source: Path, dest: Path) -> None:
    """The shipped weights in float16: half the bytes (loading casts them back to float32; outputs change
    only by rounding). Training checkpoints and stage outputs stay float32."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from mmembed.storage import atomic_write

    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata() or {}
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
    atomic_write(dest, lambda tmp: save_file(state, str(tmp), metadata=metadata))
