"""Pick a torch device and dtype: CUDA, then Apple MPS, then CPU, unless the user says otherwise."""

from __future__ import annotations

from typing import Any

from mmembed.types import MMEmbedError


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        if device not in {"cpu", "cuda", "mps"} and not device.startswith("cuda:"):
            raise MMEmbedError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """float32 on CPU (half precision is slow or unsupported there), bfloat16/float16 on accelerators."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise MMEmbedError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16") from None


def quantize_dynamic_int8(module: Any) -> Any:
    """A copy of `module` with every Linear layer dynamically quantised to int8 (CPU inference only).

    torch's eager dynamic quantisation: int8 weights, activations quantised per call. Deprecated in favour of
    torchao but present in the pinned torch; its deprecation warnings are silenced here, once.
    """
    import warnings

    import torch

    quantize_dynamic = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize_dynamic is None:
        raise MMEmbedError(f"dtype 'int8' needs torch's quantize_dynamic, which torch {torch.__version__} lacks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def zero_gpu(fn: Any) -> Any:
    """Wrap `fn` with ZeroGPU's `spaces.GPU` when the `spaces` package is importable, else return it as is.

    On a Hugging Face ZeroGPU Space a GPU is attached only inside functions decorated this way.
    """
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn)
