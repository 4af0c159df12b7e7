"""Run the recipe's stages on a registered backbone (see mmembed.train.recipe), one process or under torchrun.

Folder layout of a run (`--out`): rand/, mine/, hard/, ct/; each training stage holds checkpoint/ while it
runs, then model/ (what the registry loads: a CLIP folder, or a LoRA adapter for MLLM embedders) and
train_log.json; mine/ holds queries.jsonl (the training queries with `neg_cand_list`) and summary.json.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmembed.distributed import DistContext, shards_of_rank
from mmembed.train.recipe import STAGES, RecipeConfig, StageTrainer, load_examples, write_mined
from mmembed.types import MMEmbedError


@dataclass
class RecipeRun:
    """Which backbone, which data, where: everything `run` needs besides the hyper-parameters."""

    embedder: str
    pool: Path
    queries: Path
    out: Path
    model_id: str | None = None
    device: str = "cpu"
    lora: bool | None = None  # None: LoRA for MLLM embedders, full fine-tuning for dual encoders
    lora_rank: int = 16

    def fresh_embedder(self, stage_model: Path | None = None) -> Any:
        """A new (uncached) embedder: the base weights, or a stage's trained model/adapter on top of them."""
        from mmembed.embedders import EMBEDDERS

        options: dict[str, Any] = {"device": self.device, "model_id": self.model_id}
        if stage_model is not None:
            if (stage_model / "adapter_config.json").is_file():
                options["adapter"] = str(stage_model)
            else:
                options["model_id"] = str(stage_model)
        options = {k: v for k, v in options.items() if v is not None}
        factory = EMBEDDERS.factory(self.embedder)
        if "prepack" in inspect.signature(factory).parameters:
            options["prepack"] = False  # oneDNN-prepacked Linear layers are inference-only: no weight gradients
        return factory(info=EMBEDDERS.info(self.embedder), **options)


def run_stage(run: RecipeRun, stage: str, config: RecipeConfig, ctx: DistContext | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One stage ('rand', 'mine', 'hard', 'ct') or 'all' of them in order; finished stages are skipped."""
    from mmembed.corpus import load_corpus
    from mmembed.train.backbone import trainable_for

    if stage == "all":
        return {s: run_stage(run, s, config, ctx, log) for s in STAGES}
    if stage not in STAGES:
        raise MMEmbedError(f"unknown stage {stage!r}; use one of: {', '.join(STAGES)}, all")
    folder = run.out / stage
    if (folder / ("summary.json" if stage == "mine" else "train_log.json")).is_file():
        if log:
            log(f"stage {stage}: already done in {folder}")
        return {"skipped": True}
    pool = load_corpus(run.pool)
    if stage == "mine":
        return mine(run, pool, config, ctx, log)
    mined = None if stage == "rand" else _require(run.out / "mine" / "queries.jsonl", "mine")
    start_from = _require(run.out / "hard" / "model", "hard") if stage == "ct" else None
    embedder = run.fresh_embedder(start_from)
    trainable = trainable_for(embedder, lora=run.lora, rank=run.lora_rank)  # rank: used only when it is LoRA
    examples = load_examples(run.queries, pool, negatives_path=mined)
    return StageTrainer(trainable, examples, pool, config, stage, folder, ctx).run(log)


def mine(run: RecipeRun, pool: Any, config: RecipeConfig, ctx: DistContext | None,
         log: Callable[[str], None] | None) -> dict[str, Any]:
    """Modality-aware hard negatives from the rand model, the pool and the queries split across ranks."""
    import numpy as np

    from mmembed.index import shard_bounds
    from mmembed.storage import atomic_write_json
    from mmembed.train.mining import mine_from_vectors, summarize

    embedder = run.fresh_embedder(_require(run.out / "rand" / "model", "rand"))
    examples = load_examples(run.queries, pool)
    items = list(pool)
    world_ctx = ctx or DistContext(0, 1, 0)
    bounds = shard_bounds(len(items))
    local = {s: embedder.embed_items(items[bounds[s][0]:bounds[s][1]]) for s in shards_of_rank(len(bounds), world_ctx)}
    shards = {s: v for part in (_gather(local, ctx) if ctx else [local]) for s, v in part.items()}
    pool_vectors = np.concatenate([shards[s] for s in range(len(bounds))])
    mine_queries = examples[world_ctx.rank::world_ctx.world_size]
    vectors = np.stack([embedder.embed_query(ex.query) for ex in mine_queries]) if mine_queries else \
        np.zeros((0, pool_vectors.shape[1]), dtype=np.float32)
    mined = mine_from_vectors(vectors, pool_vectors, [i.id for i in items], [i.modality for i in items],
                              [ex.query.target for ex in mine_queries], [ex.positives for ex in mine_queries],
                              config.top_n, config.threshold)
    found = {ex.qid: [*m.wrong_modality[: config.max_c1], *m.ranked_low] for ex, m in zip(mine_queries, mined,
                                                                                        strict=True)}
    stats = summarize(mined)
    parts = _gather((found, stats), ctx) if ctx else [(found, stats)]
    summary: dict[str, Any] = {}
    if world_ctx.is_main:
        negatives = {qid: negs for part, _ in parts for qid, negs in part.items()}
        folder = run.out / "mine"
        write_mined(run.queries, negatives, folder / "queries.jsonl")
        summary = {"queries": len(negatives), "negatives_written": sum(len(n) for n in negatives.values()),
                   "c1_wrong_modality": sum(s["c1_wrong_modality"] for _, s in parts),
                   "c2_ranked_low": sum(s["c2_ranked_low"] for _, s in parts), "top_n": config.top_n,
                   "threshold": config.threshold, "max_c1_kept": config.max_c1, "world_size": world_ctx.world_size}
        atomic_write_json(folder / "summary.json", summary)
        if log:
            log(f"mined: {summary}")
    if ctx:
        import torch.distributed as dist

        dist.barrier()
    return summary


def _gather(value: Any, ctx: DistContext | None) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def _require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise MMEmbedError(f"stage {stage!r} has not finished yet ({path} is missing); run it first")
    return path
