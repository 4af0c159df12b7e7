"""The MM-Embed recipe on real backbones: rand -> mine -> hard -> ct, on M-BEIR-format data, under torchrun.

    torchrun --nproc-per-node 8 -m mmembed finetune --embedder gme-2b --pool pool.jsonl \\
             --queries train.jsonl --out runs/gme --stage all --global-batch 256 --accumulation 4

* rand: InfoNCE over (query, positive, one random negative of the target modality) with every other
  candidate of the global micro-batch as an in-batch negative (embeddings are all-gathered across ranks,
  differentiably, so 2 processes compute the loss of 1 process with the same global batch).
* mine: the rand model retrieves the top-N of every training query; wrong-modality (C1) and ranked-low
  (C2) candidates become its hard negatives (mmembed.train.mining). The pool is embedded and the queries
  mined shard by shard across ranks; rank 0 writes the queries file with `neg_cand_list`.
* hard: the same from the initial weights, with a mined negative per query (random where none).
* ct: continual fine-tuning of the hard model with a share of text->text queries in every batch.

Mechanics: torch DDP (gloo on CPUs, NCCL on GPUs) with `no_sync` during gradient accumulation, bf16
autocast on GPUs, and resumable checkpoints: the batch, its negatives and any dropout of step s come from
generators seeded with (seed, stage, s) and the learning rate is a function of s, so a run stopped after a
checkpoint and resumed takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.distributed import DistContext
from mmembed.types import MMEmbedError, Modality, Query, ValidationError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mmembed.corpus import Corpus
    from mmembed.train.backbone import Trainable

STAGES = ("rand", "mine", "hard", "ct")
TEXT_TO_TEXT = "t->t"


@dataclass
class RecipeConfig:
    """One fine-tuning run; every stage reads the fields it needs."""

    steps: int = 1000
    ct_steps: int = 200
    global_batch: int = 64  # queries per optimiser step, over all ranks and accumulation steps
    accumulation: int = 1  # micro-steps per optimiser step (global_batch / accumulation / world per rank)
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup: float = 0.05
    temperature: float = 0.05
    seed: int = 0
    checkpoint_every: int = 100
    top_n: int = 50
    threshold: int = 45
    max_c1: int = 10
    text_task_share: float = 0.5  # ct: share of text->text queries in each batch
    bf16: bool = True  # autocast on CUDA only; CPUs train in float32

    def micro_per_rank(self, world: int) -> int:
        micro, rest = divmod(self.global_batch, self.accumulation)
        if rest or micro % world or micro < world:
            raise ValidationError(f"global_batch {self.global_batch} must split into {self.accumulation} "
                                  f"micro-batches of a multiple of {world} process(es)")
        return micro // world


@dataclass(frozen=True)
class Example:
    """A training query with its positives and (after mining) its hard negatives."""

    qid: str
    query: Query
    positives: tuple[str, ...]
    task: str
    negatives: tuple[str, ...] = field(default=())


def load_examples(queries_path: Path, pool: Corpus, negatives_path: Path | None = None) -> list[Example]:
    """M-BEIR training queries whose positives are in `pool`, with the `neg_cand_list` of each query from
    `negatives_path` (the mined copy of the file, which lives elsewhere: image paths stay the original's)."""
    from mmembed.corpus import iter_jsonl_objects, load_queries

    negatives: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for _, row in iter_jsonl_objects(Path(negatives_path or queries_path), problems, what="training queries"):
        if row.get("neg_cand_list"):
            negatives[str(row.get("qid"))] = tuple(str(n) for n in row["neg_cand_list"] if str(n) in pool)
    return [Example(q.qid, q.query, q.positives, q.task, negatives.get(q.qid, ())) for q in
            load_queries(queries_path, pool)]


def lr_at(step: int, steps: int, config: RecipeConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    warm = max(1, int(steps * config.warmup))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, steps - warm))
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class StageTrainer:
    """One contrastive stage of the recipe on one rank (world_size 1 without torchrun)."""

    def __init__(self, trainable: Trainable, examples: list[Example], pool: Corpus, config: RecipeConfig,
                 stage: str, out: Path, ctx: DistContext | None = None) -> None:
        if stage not in ("rand", "hard", "ct"):
            raise MMEmbedError(f"{stage!r} is not a training stage")
        self.trainable, self.examples, self.pool, self.config = trainable, examples, pool, config
        self.stage, self.out, self.ctx = stage, Path(out), ctx
        self.world, self.rank = (ctx.world_size, ctx.rank) if ctx else (1, 0)
        self.steps = config.ct_steps if stage == "ct" else config.steps
        self.per_rank = config.micro_per_rank(self.world)
        self.by_modality: dict[Modality, list[str]] = {}
        for item in pool:
            self.by_modality.setdefault(item.modality, []).append(item.id)
        self.text_rows = [i for i, ex in enumerate(examples) if ex.task == TEXT_TO_TEXT]
        if stage == "ct" and not self.text_rows:
            raise MMEmbedError("the ct stage needs text->text queries (task 't->t') in the training set")

    # -- the data of one step: a pure function of (seed, stage, step) --------------------------------------
    def step_batch(self, step: int) -> list[tuple[Example, str, str]]:
        """(example, positive id, negative id) for every query of the global batch of `step`."""
        import numpy as np

        rng = np.random.default_rng([self.config.seed, STAGES.index(self.stage), step])
        n = self.config.global_batch
        if self.stage == "ct":
            n_text = round(n * self.config.text_task_share)
            rows = np.concatenate([rng.choice(self.text_rows, n_text), rng.choice(len(self.examples), n - n_text)])
        else:
            rows = rng.choice(len(self.examples), n, replace=n > len(self.examples))
        batch = []
        for row in rows:
            example = self.examples[int(row)]
            positive = example.positives[int(rng.integers(len(example.positives)))]
            batch.append((example, positive, self._negative(example, rng)))
        return batch

    def _negative(self, example: Example, rng: np.random.Generator) -> str:
        if self.stage != "rand" and example.negatives:
            return example.negatives[int(rng.integers(len(example.negatives)))]
        target = example.query.target or self.pool[example.positives[0]].modality
        choices = self.by_modality.get(target) or [item.id for item in self.pool]
        for _ in range(8):  # a random candidate of the target modality that is not a positive
            pick = choices[int(rng.integers(len(choices)))]
            if pick not in example.positives:
                return pick
        return pick

    # -- training --------------------------------------------------------------------------------------
    def run(self, log: Any = None, stop_after: int | None = None) -> dict[str, Any]:
        """Train from the last checkpoint to the end; `stop_after` N stops (checkpointed) after step N."""
        import torch

        from mmembed.train.checkpoint import load_checkpoint, save_checkpoint

        module = self.trainable.module
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        start, history = load_checkpoint(self.out / "checkpoint", self.trainable, optimizer)
        model = pair_module(self.trainable)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # find_unused_parameters: a micro-batch without images leaves the vision tower without gradients
            model = DistributedDataParallel(model, find_unused_parameters=True)
        module.train()
        for step in range(start, self.steps):
            torch.manual_seed(self.config.seed * 1_000_003 + STAGES.index(self.stage) * 100_003 + step)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, self.steps, self.config)
            optimizer.zero_grad(set_to_none=True)
            loss = self._accumulate(model, self.step_batch(step))
            optimizer.step()
            history.append({"step": step + 1, "loss": round(loss, 6)})
            if log and (step + 1) % max(1, self.steps // 20) == 0:
                log(f"{self.stage} step {step + 1}/{self.steps}: loss {loss:.4f}")
            stopping = stop_after is not None and step + 1 >= stop_after and step + 1 < self.steps
            if stopping or ((step + 1) % self.config.checkpoint_every == 0 and step + 1 < self.steps):
                self._on_main(lambda s=step + 1: save_checkpoint(self.out / "checkpoint", self.trainable, optimizer,
                                                                 s, history, asdict(self.config)))
            if stopping:
                return {"stage": self.stage, "stopped_at": step + 1}
        module.eval()
        summary = {"stage": self.stage, "steps": self.steps, "world_size": self.world,
                   "final_loss": history[-1]["loss"] if history else None, "config": asdict(self.config)}
        self._on_main(lambda: self._finish(history, summary))
        return summary

    def _accumulate(self, model: Any, batch: list[tuple[Example, str, str]]) -> float:
        """Forward and backward over the accumulation micro-steps of one optimiser step; the mean loss."""
        import torch

        from mmembed.embedders._mllm_common import EmbedInput
        from mmembed.instructions import instruction_for
        from mmembed.train.losses import info_nce

        micro = self.per_rank * self.world
        total = 0.0
        device = next(self.trainable.module.parameters()).device
        for j in range(self.config.accumulation):
            part = batch[j * micro:(j + 1) * micro]
            mine = part[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
            queries = [EmbedInput(ex.query.text, ex.query.image, instruction_for(ex.query)) for ex, _, _ in mine]
            cands = [self.pool[pos] for _, pos, _ in mine] + [self.pool[neg] for _, _, neg in mine]
            last = j == self.config.accumulation - 1
            sync = model.no_sync() if self.world > 1 and not last else nullcontext()
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and self.config.bf16 \
                else nullcontext()
            with sync, autocast:
                q, c = model(queries, [EmbedInput(item.text, item.image) for item in cands])
                if self.world > 1:
                    import torch.distributed.nn.functional as dist_fn

                    c = torch.cat(dist_fn.all_gather(c))
                targets, exclude = self._targets(part, device)
                loss = info_nce(q.float(), c.float(), targets, self.config.temperature, exclude)
                # mean over this rank's queries: DDP averages over ranks and the gather sums the rest back
                (loss / self.config.accumulation).backward()
            total += float(loss.detach()) / self.config.accumulation
        if self.world > 1:
            import torch.distributed as dist

            reduced = torch.tensor([total], device=device)
            dist.all_reduce(reduced)
            total = float(reduced) / self.world
        return total

    def _targets(self, part: list[tuple[Example, str, str]], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Column of each local query's positive among the gathered candidates, and the false-negative mask.

        Gathered layout: for each rank r, its queries' positives then their negatives (2 * per_rank columns).
        """
        import torch

        p = self.per_rank
        ids: list[str] = []
        for r in range(self.world):
            chunk = part[r * p:(r + 1) * p]
            ids += [pos for _, pos, _ in chunk] + [neg for _, _, neg in chunk]
        mine = part[self.rank * p:(self.rank + 1) * p]
        targets = torch.tensor([self.rank * 2 * p + i for i in range(len(mine))], device=device)
        exclude = torch.tensor([[cid in ex.positives for cid in ids] for ex, _, _ in mine], device=device)
        return targets, exclude

    def _on_main(self, action: Any) -> None:
        if self.rank == 0:
            action()
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _finish(self, history: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        from mmembed.storage import atomic_write_json

        self.trainable.save(self.out / "model")
        atomic_write_json(self.out / "train_log.json", {**summary, "history": history})


def pair_module(trainable: Trainable) -> torch.nn.Module:
    """Queries and candidates in one forward call, so DDP sees each parameter used once per step."""
    import torch

    class PairModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = trainable.module

        def forward(self, queries: list, candidates: list) -> tuple[torch.Tensor, torch.Tensor]:
            return trainable.encode(queries), trainable.encode(candidates)

    return PairModule()


def write_mined(queries_path: Path, negatives: dict[str, list[str]], out: Path) -> None:
    """The training queries file with each query's mined `neg_cand_list` (order and other keys kept)."""
    from mmembed.corpus import iter_jsonl_objects
    from mmembed.storage import atomic_write

    problems: list[str] = []
    rows = [{**row, "neg_cand_list": negatives.get(str(row.get("qid")), [])}
            for _, row in iter_jsonl_objects(Path(queries_path), problems, what="training queries")]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
