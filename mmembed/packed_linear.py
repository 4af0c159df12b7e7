"""Linear layers with oneDNN-prepacked weights, for batch-1 CPU queries (imported lazily: it imports torch).

Why: a single query runs GEMMs with few rows (50 patch tokens for ViT-B/32, about 10 text tokens), where plain
`F.linear` (MKL) re-packs the weight matrix on every call and reaches a small fraction of the machine's matmul
peak. Packing the weights once, at load time, into oneDNN's blocked layout removes that work; outputs equal
`F.linear`'s to float32 rounding. `benchmarks/bench_retrieval.py` measures the effect (`packed_linear`).
"""

from __future__ import annotations

import torch


class PackedLinear(torch.nn.Module):
    """nn.Linear's forward over a oneDNN-prepacked weight; inference only (no gradient reaches the weight)."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        # The bias stays a parameter, so `model.dtype` / `model.device` still find a float32 CPU tensor.
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed, bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prepacked=oneDNN"


def available() -> bool:
    """oneDNN linear ops are in this torch build (the CPU wheels have them; some custom builds do not)."""
    ops = torch.ops.mkldnn
    try:
        return bool(torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                    and hasattr(ops, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def prepack_linear_layers(module: torch.nn.Module, rows_hint: int) -> int:
    """Replace, in place, every float32 CPU nn.Linear in `module` by a PackedLinear; returns how many.

    `rows_hint` is the typical number of rows per call (oneDNN picks its weight layout for it); any other row
    count still works. Without oneDNN nothing changes and 0 is returned. Embedding layers that happen to be
    Linear (SigLIP 2's patch embedding) are left alone: model code reads their `.weight` (e.g. for its dtype).
    """
    if not available():
        return 0
    packed = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            weight = getattr(child, "weight", None)
            if ("embed" not in name and type(child) is torch.nn.Linear and weight.dtype == torch.float32
                    and weight.device.type == "cpu"):
                setattr(parent, name, PackedLinear(child, rows_hint))
                packed += 1
    return packed
