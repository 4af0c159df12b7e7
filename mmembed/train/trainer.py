"""One contrastive training stage: seedable, resumable, logged.

Every random choice of step `s` comes from generators seeded with (seed, s): the batch, its negatives and
its augmentation. The learning rate is a pure function of the step. So a run stopped after a checkpoint
and resumed from it takes exactly the steps the uninterrupted run would have taken.

Checkpoint (out/checkpoint/): model.safetensors, optimizer.safetensors (AdamW moments), state.json (step,
config, log). The finished stage is written as a model directory MiniEmbedder loads (out/).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmembed.models.mini import MiniConfig, save_model_dir
from mmembed.storage import atomic_write, atomic_write_json
from mmembed.train.data import TrainingArrays
from mmembed.types import Modality, ValidationError

MODALITIES = (Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT)


@dataclass
class StageConfig:
    """One training stage's hyper-parameters (negatives, steps, batch, learning rates, temperature)."""

    negatives: str = "random"  # "random": pool negatives; "hard": mined neg_cand_list (random where none)
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    head_lr: float = 5e-4  # text-side heads move gently: they start as the identity of a good text model
    weight_decay: float = 1e-4
    temperature: float = 0.05
    random_negatives: int = 128  # per batch, from the pool of the batch's target modality, shared by its queries
    text_task_share: float | None = None  # continual fine-tuning: share of text->text queries per batch
    warmup: float = 0.05
    seed: int = 0
    checkpoint_every: int = 50
    validate_every: int = 0  # 0: only at the end
    augment: bool = True
    photo_augment: bool = True  # backgrounds, colour, grayscale, blur on top of zoom/shift/mirror
    concept_weight: float = 0.0  # auxiliary loss: images towards their concept's locked text vector
    concept_batch: int = 256
    task_balance: str = "count"  # "count": tasks drawn by their share of queries; "uniform": equally often
    feature_views: int = 2  # frozen pretrained image tower: precomputed views per image (1 clean + augmented)

    def __post_init__(self) -> None:
        if self.negatives not in ("random", "hard"):
            raise ValidationError(f"negatives must be 'random' or 'hard', got {self.negatives!r}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValidationError("steps must be >= 1 and batch_size >= 2")
        if self.temperature <= 0:
            raise ValidationError(f"temperature must be > 0, got {self.temperature}")
        if self.task_balance not in ("count", "uniform"):
            raise ValidationError(f"task_balance must be 'count' or 'uniform', got {self.task_balance!r}")
        if self.concept_weight < 0 or self.feature_views < 1:
            raise ValidationError("concept_weight must be >= 0 and feature_views >= 1")
        if self.text_task_share is not None and not 0 < self.text_task_share < 1:
            raise ValidationError(f"text_task_share must be in (0, 1), got {self.text_task_share}")


def lr_at(step: int, config: StageConfig, base: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of `base`."""
    warm = max(1, int(config.steps * config.warmup))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, config.steps - warm)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Trainer:
    """Contrastive training of one stage: batches by task, InfoNCE, checkpoints, resume, validation."""

    def __init__(self, data: TrainingArrays, text_vectors, model, model_config: MiniConfig, config: StageConfig,
                 out: Path, progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] | None
                 = None, feature_cache: Path | None = None) -> None:
        import numpy as np
        import torch

        self.data, self.model, self.model_config, self.config = data, model, model_config, config
        self.out = Path(out)
        self.progress = progress
        self.log_fn = log or (lambda message: None)
        self.text = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32))
        self.images = torch.from_numpy(data.images)  # uint8, converted per batch
        self.train_queries = data.split("train")
        if len(self.train_queries) < 2:
            raise ValidationError("the training set needs at least 2 training queries")
        tasks = np.array([data.queries[i].task for i in self.train_queries])
        self.task_names = sorted(set(tasks.tolist()))
        self.task_queries = [self.train_queries[tasks == name] for name in self.task_names]
        self.task_weights = np.array([len(m) if config.task_balance == "count" else 1 for m in self.task_queries],
                                     dtype=np.float64)
        self.task_weights /= self.task_weights.sum()
        self.pool_by_modality = {m: np.flatnonzero(data.pool_modality == m) for m in range(3)}
        for members in self.task_queries:  # a task must have one target modality for its negatives
            if len({int(t) for t in data.query_target[members]}) != 1:
                raise ValidationError("every task type must have a single target modality")
        if config.text_task_share is not None and ("t->t" not in self.task_names or len(self.task_names) < 2):
            raise ValidationError("continual fine-tuning needs both text->text and multimodal training queries")
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        head = [p for n, p in trainable if not n.startswith("image_tower.")]
        tower = [p for n, p in trainable if n.startswith("image_tower.")]
        self.features = None  # (n_images, views, d) backbone features when the image tower is frozen+pretrained
        if hasattr(model.image_tower, "backbone"):
            from mmembed.train.features import backbone_features

            self.features = backbone_features(model.image_tower, data.images, config.feature_views,
                                              feature_cache, progress)
        self._concept_images = (np.flatnonzero(data.image_concept >= 0) if data.image_concept is not None
                                else np.zeros(0, dtype=np.int64))
        self.optimizer = torch.optim.AdamW([
            {"params": tower, "lr": config.lr, "base_lr": config.lr},
            {"params": head, "lr": config.head_lr, "base_lr": config.head_lr},
        ], weight_decay=config.weight_decay)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._positive_sets = [data.not_negative(q) for q in range(len(data.queries))]

    # ------------------------------------------------------------------------------------------ batches
    def _batch(self, step: int):
        """One batch: queries of a single task (as UniIR batches an M-BEIR dataset), its positives, and negatives.

        Random negatives come from the pool of the batch's target modality, like M-BEIR's task-specific
        candidate pools: a model trained only with them never sees a wrong-modality candidate, which is
        where MM-Embed's modality bias comes from. Hard negatives (mined C1/C2, one per query) come on top."""
        import numpy as np

        rng = np.random.default_rng([self.config.seed, step])
        size = self.config.batch_size
        if self.config.text_task_share is None:
            task = rng.choice(len(self.task_names), p=self.task_weights)
        elif rng.random() < self.config.text_task_share:
            task = self.task_names.index("t->t")
        else:
            other = [i for i, name in enumerate(self.task_names) if name != "t->t"]
            weights = self.task_weights[other] / self.task_weights[other].sum()
            task = other[rng.choice(len(other), p=weights)]
        members = self.task_queries[task]
        queries = rng.choice(members, size=size, replace=len(members) < size)
        positives = np.array([rng.choice(self.data.positives[q]) for q in queries])
        target_pool = self.pool_by_modality[int(self.data.query_target[queries[0]])]
        parts = [positives, rng.choice(target_pool, size=self.config.random_negatives)]
        if self.config.negatives == "hard":
            parts.append(np.array([rng.choice(self.data.negatives[q]) if len(self.data.negatives[q])
                                   else rng.choice(target_pool) for q in queries]))
        candidates = np.concatenate(parts)
        exclude = np.array([[c in self._positive_sets[q] for c in candidates] for q in queries])
        return queries, candidates, exclude

    def _pixels(self, image_rows, generator=None):
        """What the image tower reads for these image rows: pixels (augmented while training), or, for a
        frozen pretrained tower, one precomputed view's features (a random augmented view while training)."""
        import torch

        from mmembed.train.augment import augment

        rows = torch.as_tensor(image_rows)
        augmenting = generator is not None and self.config.augment and len(rows) > 0
        if self.features is not None:
            views = self.features.shape[1]
            # views 1.. are the photo-augmented ones; without photo augmentation only view 0 is read
            view = (torch.randint(0, views, (len(rows),), generator=generator)
                    if augmenting and views > 1 and self.config.photo_augment
                    else torch.zeros(len(rows), dtype=torch.long))
            return self.features[rows, view].float()
        pixels = self.images[rows].permute(0, 3, 1, 2).float() / 255.0
        return augment(pixels, generator, self.config.photo_augment) if augmenting else pixels

    def encode_queries(self, rows, generator=None):
        import torch

        d = self.data
        text_rows = torch.as_tensor(d.query_text[rows])
        image_rows = d.query_image[rows]
        has_image = torch.as_tensor(image_rows >= 0)
        return self.model.encode_queries(
            self.text[text_rows.clamp(min=0)], self._pixels(image_rows[image_rows >= 0], generator),
            text_rows >= 0, has_image, self.text[torch.as_tensor(d.query_instruction[rows])])

    def encode_candidates(self, rows, generator=None):
        import torch

        d = self.data
        text_rows = torch.as_tensor(d.pool_text[rows])
        image_rows = d.pool_image[rows]
        return self.model.encode_candidates(
            self.text[text_rows.clamp(min=0)], self._pixels(image_rows[image_rows >= 0], generator),
            text_rows >= 0, torch.as_tensor(image_rows >= 0), torch.as_tensor(d.pool_modality[rows]))

    def loss_at(self, step: int):
        import torch

        from mmembed.train.losses import info_nce

        queries, candidates, exclude = self._batch(step)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        q = self.encode_queries(queries, generator)
        c = self.encode_candidates(candidates, generator)
        targets = torch.arange(len(queries))
        loss = info_nce(q, c, targets, self.config.temperature, torch.as_tensor(exclude))
        if self.config.concept_weight > 0 and len(self._concept_images):
            loss = loss + self.config.concept_weight * self.concept_loss(step, generator)
        return loss

    def concept_loss(self, step: int, generator):
        """Images towards the locked text vector of their concept ("a picture of apple"): a classifier over
        every concept whose weights are the text tower's vectors, so images land where the words are."""
        import numpy as np
        import torch

        rng = np.random.default_rng([self.config.seed, step, 7])
        rows = rng.choice(self._concept_images, size=min(self.config.concept_batch, len(self._concept_images)),
                          replace=False)
        norm = torch.nn.functional.normalize
        v = norm(self.model.image_tower(self._pixels(rows, generator)), dim=-1)
        prompts = norm(self.text[torch.as_tensor(self.data.concept_text)], dim=-1)
        labels = torch.as_tensor(self.data.image_concept[rows])
        return torch.nn.functional.cross_entropy(v @ prompts.T / self.config.temperature, labels)

    def train_step(self) -> float:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.config, group["base_lr"])
        loss = self.loss_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    # ------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    def save_checkpoint(self) -> None:
        from safetensors.torch import save_file

        folder = self.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        state = self.optimizer.state_dict()
        tensors = {}
        for index, slots in state["state"].items():
            for name, value in slots.items():
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous().reshape(value.shape)
        for name, tensor_map in (("model", {k: v.detach().cpu().contiguous() for k, v in
                                             self.model.state_dict().items()}), ("optimizer", tensors)):
            atomic_write(folder / f"{name}.safetensors", lambda tmp, t=tensor_map: save_file(t, str(tmp)))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        atomic_write_json(folder / "state.json", {"step": self.step, "config": asdict(self.config),
                                             "model_config": self.model_config.to_json(), "param_groups": groups,
                                             "history": self.history})

    def try_resume(self) -> bool:
        """Continue from out/checkpoint if it belongs to this very run (same stage config); else start fresh."""
        import torch
        from safetensors.torch import load_file

        folder = self.checkpoint_dir
        if not (folder / "state.json").is_file():
            return False
        try:
            saved = json.loads((folder / "state.json").read_text())
            if saved["config"] != asdict(self.config):
                self.log_fn(f"checkpoint in {folder} is from another configuration; starting this stage afresh")
                return False
            self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
            tensors = load_file(str(folder / "optimizer.safetensors"))
        except Exception as exc:  # a corrupt checkpoint is reported and ignored, never half-used
            self.log_fn(f"checkpoint in {folder} is unreadable ({exc}); starting this stage afresh")
            return False
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            slots.setdefault(int(index), {})[name] = value
        groups = self.optimizer.state_dict()["param_groups"]
        for group, saved_group in zip(groups, saved["param_groups"], strict=True):
            group.update({k: v for k, v in saved_group.items() if k != "params"})
        self.optimizer.load_state_dict({"state": slots, "param_groups": groups})
        self.step = int(saved["step"])
        self.history = list(saved["history"])
        self.log_fn(f"resumed from {folder} at step {self.step}")
        return True

    # ----------------------------------------------------------------------------------------- running
    def run(self, stop_after: int | None = None, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train to `config.steps` (or stop early after `stop_after` steps, leaving a checkpoint)."""
        self.try_resume()
        running: list[float] = []
        end = self.config.steps if stop_after is None else min(self.config.steps, stop_after)
        while self.step < end:
            running.append(self.train_step())
            if self.progress is not None:
                self.progress(self.step, self.config.steps, f"training ({self.config.negatives} negatives)")
            if self.step % self.config.checkpoint_every == 0 or self.step == end:
                self.history.append({"step": self.step, "loss": round(sum(running) / len(running), 5),
                                     "lr": lr_at(self.step - 1, self.config, self.config.lr)})
                self.log_fn(f"step {self.step}/{self.config.steps} loss {self.history[-1]['loss']:.4f}")
                running = []
                if self.config.validate_every and self.step % self.config.validate_every == 0 and self.step < end:
                    self.history.append({"step": self.step, "validation": self.validate()})
                self.save_checkpoint()
        if self.step < self.config.steps:
            return {"finished": False, "step": self.step}
        validation = self.validate()
        self.history.append({"step": self.step, "validation": validation})
        self.log_fn(f"validation: {json.dumps(validation)}")
        self.save_checkpoint()
        fingerprint = save_model_dir(self.model, self.model_config, self.out,
                                     {"training": {"stage": asdict(self.config), **(info or {})},
                                      "validation": validation})
        atomic_write_json(self.out / "train_log.json", self.history)
        return {"finished": True, "step": self.step, "validation": validation, "fingerprint": fingerprint}

    # -------------------------------------------------------------------------------------- evaluation
    def embed_pool(self, batch: int = 512):
        import numpy as np
        import torch

        self.model.eval()
        rows = np.arange(len(self.data.pool))
        with torch.inference_mode():
            parts = [self.encode_candidates(rows[s : s + batch]).numpy() for s in range(0, len(rows), batch)]
        return np.concatenate(parts)

    def embed_query_rows(self, rows, batch: int = 512):
        import numpy as np
        import torch

        self.model.eval()
        with torch.inference_mode():
            parts = [self.encode_queries(rows[s : s + batch]).numpy() for s in range(0, len(rows), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self.model_config.dim), dtype=np.float32)

    def validate(self, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, Any]:
        """Recall@k per task and overall, and the top-5 wrong-modality rate, on the validation split."""
        rows = self.data.split("val")
        if len(rows) == 0:
            return {}
        return retrieval_metrics(self.data, rows, self.embed_query_rows(rows), self.embed_pool(), ks)


def retrieval_metrics(data: TrainingArrays, rows, query_vectors, pool_vectors,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, Any]:
    """Exact inner-product ranking of the pool for each query row, scored by `mmembed.metrics` (the same
    Recall@k / wrong-modality code and key names as `mmembed eval`)."""
    from mmembed.metrics import MetricsAccumulator
    from mmembed.models.mini import MODALITY_INDEX
    from mmembed.train.mining import top_n_indices

    modality_of = {index: modality for modality, index in MODALITY_INDEX.items()}
    metrics = MetricsAccumulator(ks)
    ranked = top_n_indices(query_vectors, pool_vectors, metrics.depth + 2)
    for row, ranking in zip(rows, ranked, strict=True):
        positives = set(data.positives[row].tolist())
        ignored = data.not_negative(row) - positives
        ranking = ranking[[int(c) not in ignored for c in ranking]]  # e.g. an image query's own image
        ranked_modalities = [modality_of[int(m)] for m in data.pool_modality[ranking]]
        metrics.add(data.queries[row].task, ranking.tolist(), positives, modality_of[int(data.query_target[row])],
                    ranked_modalities)
    return metrics.report("natural").to_dict()
