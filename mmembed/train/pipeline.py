"""The four stages of the recipe, each writing into its own folder under `out`:

    out/m_rand      stage "rand": InfoNCE with in-batch + random pool negatives
    out/mined       stage "mine": queries.jsonl with neg_cand_list mined by m_rand, and counts
    out/m_hard      stage "hard": retrained from the same initial weights with the mined negatives
    out/m_hard_ct   stage "ct":   m_hard fine-tuned on text->text mixed with multimodal queries

Each finished folder is a model directory MiniEmbedder loads. A stage whose output exists is skipped
(pass force=True to redo it); an interrupted stage resumes from its checkpoint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmembed.models.mini import CONFIG_NAME, MiniConfig
from mmembed.storage import atomic_write_json
from mmembed.train.trainer import StageConfig
from mmembed.types import MMEmbedError

STAGES = ("rand", "mine", "hard", "ct")
STAGE_DIRS = {"rand": "m_rand", "mine": "mined", "hard": "m_hard", "ct": "m_hard_ct"}


@dataclass
class PipelineConfig:
    """Where the data and outputs live and how each stage of the recipe is configured."""

    data: Path
    out: Path
    seed: int = 0
    model: MiniConfig = field(default_factory=MiniConfig)
    rand: StageConfig = field(default_factory=StageConfig)
    hard: StageConfig = field(default_factory=lambda: StageConfig(negatives="hard"))
    ct: StageConfig = field(default_factory=lambda: StageConfig(negatives="hard", steps=100, lr=5e-4, head_lr=2e-4,
                                                               text_task_share=0.6, warmup=0.0))
    top_n: int = 50
    threshold: int = 45
    text_cache: Path | None = None  # where frozen text-tower vectors are kept (default out/text_cache)
    feature_cache: Path | None = None  # frozen image-backbone features (default out/feature_cache)
    max_c1: int = 10  # C1 negatives kept per query (highest ranked first), so C2 is not drowned out


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Pipeline:
    """The MM-Embed recipe end to end: M_rand, hard-negative mining, M_hard, continual fine-tuning."""

    def __init__(self, config: PipelineConfig, text_encoder=None, progress: Callable | None = None,
                 log: Callable[[str], None] = _stderr) -> None:
        self.config = config
        self.progress = progress
        self.log = log
        self._text_encoder = text_encoder
        self._arrays = None
        self._text_vectors = None

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from mmembed.models.minilm import shared_minilm

            self._text_encoder = shared_minilm("cpu")
        return self._text_encoder

    def model_config(self) -> MiniConfig:
        from mmembed.models.minilm import TEXT_TOWER_PACKAGE, text_tower_version

        model = self.config.model
        if model.text_tower == TEXT_TOWER_PACKAGE and not model.text_tower_version:
            model = replace(model, text_tower_version=text_tower_version())
        return replace(model, dim=self.text_encoder.dim)

    @property
    def feature_cache(self) -> Path:
        return self.config.feature_cache or self.config.out / "feature_cache"

    def stage_dir(self, stage: str) -> Path:
        return self.config.out / STAGE_DIRS[stage]

    def load_data(self, queries_path: Path | None = None):
        from mmembed.train.data import load_training_set
        from mmembed.train.text import cached_text_vectors

        arrays = load_training_set(self.config.data, queries_path, self.config.model.image_size,
                                   progress=self.progress)
        cache = self.config.text_cache or self.config.out / "text_cache"
        vectors = cached_text_vectors(self.text_encoder, arrays.texts, cache, self.progress)
        return arrays, vectors

    def initial_model(self):
        """The same starting weights for M_rand and M_hard: built from the seed, saved once, re-read after."""
        import torch

        from mmembed.models.mini import build_model, load_model_dir, save_model_dir

        init_dir = self.config.out / "init"
        if (init_dir / CONFIG_NAME).is_file():
            model, _, _ = load_model_dir(init_dir)
            return model
        torch.manual_seed(self.config.seed)
        model = build_model(self.model_config())
        if self.config.model.image_tower == "efficientnet-lite0":  # start from the ImageNet weights (frozen)
            from mmembed.models.efficientnet_lite import load_pretrained

            # rounded to float16 as the shipped file stores it, so the saved init reloads to the very same weights
            state = {k: v.half().float() if v.is_floating_point() else v
                     for k, v in load_pretrained(with_classifier=True).state_dict().items()}
            model.image_tower.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")})
            if self.config.model.class_prior:  # the class names' vectors come from the same locked text tower
                from mmembed.models.efficientnet_lite import imagenet_class_prompts

                class_text = torch.from_numpy(self.text_encoder.encode(imagenet_class_prompts())).half().float()
                model.image_tower.set_class_prior(state, class_text)
        save_model_dir(model, self.model_config(), init_dir, {"training": {"stage": "init", "seed": self.config.seed}})
        return model

    def _train(self, stage: str, model, stage_config: StageConfig, queries_path: Path | None, stop_after=None):
        from mmembed.train.trainer import Trainer

        arrays, vectors = self.load_data(queries_path)
        if stage_config.negatives == "hard" and not any(len(n) for n in arrays.negatives):
            raise MMEmbedError(f"stage {stage!r} needs mined negatives; run the 'mine' stage first")
        trainer = Trainer(arrays, vectors, model, self.model_config(), replace(stage_config, seed=self.config.seed),
                          self.stage_dir(stage), progress=self.progress, log=self.log,
                          feature_cache=self.feature_cache)
        info = {"data": str(self.config.data), "data_fingerprint": _data_fingerprint(self.config.data),
                "text_encoder": self.text_encoder.name}
        return trainer.run(stop_after=stop_after, info=info)

    def done(self, stage: str) -> bool:
        folder = self.stage_dir(stage)
        return (folder / "summary.json").is_file() if stage == "mine" else (folder / "model.safetensors").is_file() \
            and (folder / "train_log.json").is_file()

    def run(self, stage: str, force: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        if stage == "all":
            return {s: self.run(s, force=force) for s in STAGES}
        if stage not in STAGES:
            raise MMEmbedError(f"unknown stage {stage!r}; use one of: {', '.join(STAGES)}, all")
        if self.done(stage) and not force:
            self.log(f"stage {stage}: already done in {self.stage_dir(stage)} (use --force to redo)")
            return {"skipped": True}
        self.log(f"stage {stage} -> {self.stage_dir(stage)}")
        if stage == "rand":
            return self._train("rand", self.initial_model(), self.config.rand, None, stop_after)
        if stage == "mine":
            return self.mine()
        if stage == "hard":
            return self._train("hard", self.initial_model(), self.config.hard, self._mined_path(), stop_after)
        from mmembed.models.mini import load_model_dir

        self._require("hard")
        model, _, _ = load_model_dir(self.stage_dir("hard"))
        return self._train("ct", model, self.config.ct, self._mined_path(), stop_after)

    def _require(self, stage: str) -> None:
        if not self.done(stage):
            raise MMEmbedError(f"stage {stage!r} has not been run yet in {self.config.out}; run it first")

    def _mined_path(self) -> Path:
        self._require("mine")
        return self.stage_dir("mine") / "queries.jsonl"

    def mine(self) -> dict[str, Any]:
        from mmembed.models.mini import load_model_dir
        from mmembed.train.data import write_queries_with_negatives
        from mmembed.train.mining import mine_from_vectors, summarize
        from mmembed.train.trainer import Trainer

        self._require("rand")
        model, _, _ = load_model_dir(self.stage_dir("rand"))
        arrays, vectors = self.load_data()
        helper = Trainer(arrays, vectors, model, self.model_config(), self.config.rand, self.stage_dir("rand"),
                         feature_cache=self.feature_cache)
        rows = __import__("numpy").arange(len(arrays.queries))
        self.log(f"mining top-{self.config.top_n} for {len(rows)} queries over {len(arrays.pool)} candidates")
        mined = mine_from_vectors(helper.embed_query_rows(rows), helper.embed_pool(), [p.did for p in arrays.pool],
                                  [p.modality for p in arrays.pool], [q.target for q in arrays.queries],
                                  [q.positives + q.ignore for q in arrays.queries], self.config.top_n,
                                  self.config.threshold)
        negatives = [list(m.wrong_modality[: self.config.max_c1]) + list(m.ranked_low) for m in mined]
        folder = self.stage_dir("mine")
        folder.mkdir(parents=True, exist_ok=True)
        write_queries_with_negatives(folder / "queries.jsonl", arrays.queries, negatives)
        summary = {**summarize(mined), "top_n": self.config.top_n, "threshold": self.config.threshold,
                   "max_c1_kept": self.config.max_c1, "negatives_written": sum(len(n) for n in negatives),
                   "by_task": _by_task(arrays.queries, mined)}
        atomic_write_json(folder / "summary.json", summary, sort_keys=False)
        self.log(f"mined: {json.dumps(summary)}")
        return summary


def _by_task(queries, mined) -> dict[str, dict[str, float]]:
    out: dict[str, list] = {}
    for query, negs in zip(queries, mined, strict=True):
        out.setdefault(query.task, []).append((len(negs.wrong_modality), len(negs.ranked_low)))
    return {task: {"queries": len(v), "c1_per_query": round(sum(a for a, _ in v) / len(v), 2),
                   "c2_per_query": round(sum(b for _, b in v) / len(v), 2)} for task, v in sorted(out.items())}


def _data_fingerprint(root: Path) -> str | None:
    manifest = Path(root) / "manifest.json"
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text()).get("fingerprint")
        except json.JSONDecodeError:
            return None
    return None
