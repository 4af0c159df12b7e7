"""`python -m mmembed finetune`: the MM-Embed recipe (rand -> mine -> hard -> ct) on a registered backbone.

    python -m mmembed finetune --embedder clip-b32 --pool pool.jsonl --queries train.jsonl --out runs/clip
    torchrun --nproc-per-node 8 -m mmembed finetune --embedder gme-2b --lora ... --global-batch 256

CLIP/SigLIP are fine-tuned in full; MLLM embedders (gme-2b, mm-embed) get LoRA adapters. The trained model
loads back through the registry: `--embedder clip-b32 --model-id runs/clip/ct/model`, or for an MLLM
`EMBEDDERS.get("gme-2b", adapter="runs/gme/ct/model")`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("finetune", help="the paper's recipe on a real backbone (DDP under torchrun)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", required=True, help="registered embedder to fine-tune (clip-b32, gme-2b, ...)")
    parser.add_argument("--model-id", default=None, help="its weights: a hub id or folder (default: the registry's)")
    parser.add_argument("--pool", type=Path, required=True, help="M-BEIR candidate pool jsonl")
    parser.add_argument("--queries", type=Path, required=True, help="M-BEIR training queries jsonl")
    parser.add_argument("--out", type=Path, required=True, help="run folder (stages resume from it)")
    parser.add_argument("--stage", default="all", choices=["rand", "mine", "hard", "ct", "all"])
    parser.add_argument("--device", default="auto")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument("--lora", dest="lora", action="store_true", default=None, help="LoRA (default for MLLMs)")
    lora.add_argument("--full", dest="lora", action="store_false", help="full fine-tuning (default for CLIP/SigLIP)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--ct-steps", type=int, default=200)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmembed.distributed import context_from_env, process_group, rank_device
    from mmembed.train.recipe import RecipeConfig
    from mmembed.train.run_recipe import RecipeRun, run_stage

    ctx = context_from_env()
    device = rank_device(ctx, args.device) if ctx else args.device
    if device == "auto":
        from mmembed.devices import resolve_device

        device = resolve_device(device)
    config = RecipeConfig(steps=args.steps, ct_steps=args.ct_steps, global_batch=args.global_batch,
                          accumulation=args.accumulation, lr=args.lr, checkpoint_every=args.checkpoint_every,
                          seed=args.seed)
    recipe = RecipeRun(args.embedder, args.pool, args.queries, args.out, model_id=args.model_id, device=device,
                       lora=args.lora, lora_rank=args.lora_rank)

    def log(message: str) -> None:
        if ctx is None or ctx.is_main:
            print(message, file=sys.stderr, flush=True)

    if ctx is None:
        run_stage(recipe, args.stage, config, None, log)
    else:
        with process_group(ctx, device):
            run_stage(recipe, args.stage, config, ctx, log)
    return 0
