"""Resumable checkpoints of a fine-tuning stage: trainable tensors, AdamW state, step and loss history.

Everything is safetensors + JSON (no pickle): `trainable.safetensors` (the trainable parameters by name),
`optimizer.safetensors` (each parameter's AdamW moments and step count, by parameter position), and
`state.json` (step, history, config). The state file is written last, so a checkpoint is complete iff it
exists; a crash mid-save leaves the previous checkpoint in force.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.storage import atomic_write, atomic_write_json, read_json
from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    import torch

    from mmembed.train.backbone import Trainable


def save_checkpoint(folder: Path, trainable: Trainable, optimizer: torch.optim.Optimizer, step: int,
                    history: list[dict[str, Any]], config: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().contiguous().cpu() for name, t in trainable.trainable_state().items()}
    atomic_write(folder / "trainable.safetensors", lambda tmp: save_file(weights, str(tmp)))
    moments = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            moments[f"{index}.{key}"] = (value if hasattr(value, "detach") else _scalar(value)).detach().cpu()
    atomic_write(folder / "optimizer.safetensors", lambda tmp: save_file(moments, str(tmp)))
    atomic_write_json(folder / "state.json", {"step": step, "history": history, "config": config})


def load_checkpoint(folder: Path, trainable: Trainable, optimizer: torch.optim.Optimizer
                    ) -> tuple[int, list[dict[str, Any]]]:
    """(step to start at, loss history so far); (0, []) when there is no checkpoint."""
    import torch
    from safetensors.torch import load_file

    state = read_json(folder / "state.json")
    if not isinstance(state, dict):
        return 0, []
    weights = load_file(str(folder / "trainable.safetensors"))
    params = trainable.trainable_state()
    if set(weights) != set(params):
        raise MMEmbedError(f"checkpoint {folder} holds other parameters than this model trains; "
                           "remove it to start the stage afresh")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name].to(param.device, param.dtype))
    moments = load_file(str(folder / "optimizer.safetensors"))
    restored: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = value
    device = next(iter(params.values())).device
    optimizer.load_state_dict({"state": {i: {k: (v if k == "step" else v.to(device)) for k, v in s.items()}
                                         for i, s in restored.items()},
                               "param_groups": optimizer.state_dict()["param_groups"]})
    return int(state["step"]), list(state.get("history", []))


def _scalar(value: float) -> torch.Tensor:
    import torch

    return torch.tensor(float(value))
