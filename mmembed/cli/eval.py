"""`python -m mmembed eval`: Recall@k per task type and wrong-modality rates on M-BEIR-format queries.

Runs through the workbench (mmembed.workbench), so `--failures` writes the same failure records the page
shows, and `--compare EMBEDDER` puts a second model's figures beside the first, named. `--reranker NAME`
reranks every query's first-stage top `--rerank-depth` too: both stages' figures side by side; in `--json`
the usual keys stay the first stage's and a `reranked` object with the same keys is added.

Under torchrun (`torchrun --nproc-per-node N -m mmembed eval ...`) every rank embeds its share of the corpus
as `index build` does, then embeds, searches and reranks its share of the queries; rank 0 gathers them in
file order and prints (and writes) exactly what a one-process eval does; the other ranks print one line each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.cli._common import add_retrieval_args, build_retriever

if TYPE_CHECKING:
    from mmembed.distributed import DistContext
    from mmembed.embedders.base import Embedder
    from mmembed.rerankers.base import Reranker
    from mmembed.retriever import Retriever
    from mmembed.workbench import QuerySet, WorkbenchReport
    from mmembed.workbench.report import ModelRun


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="Recall@k per task and wrong-modality rate on evaluation queries",
                                   description="Evaluate retrieval on M-BEIR-format queries.")
    parser.add_argument("--queries", type=Path, default=None,
                        help="M-BEIR query jsonl (default: the sample corpus's queries.jsonl)")
    parser.add_argument("--mode", choices=["natural", "filtered"], default="natural")
    parser.add_argument("-k", "--ks", default="1,5,10", help="comma-separated cut-offs (default 1,5,10)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--compare", metavar="EMBEDDER", default=None,
                        help="also evaluate this embedder on the same queries; both models' figures and their "
                        "difference are printed, named")
    parser.add_argument("--failures", type=Path, metavar="FILE", default=None,
                        help="write one JSON object per failing query and model (qid, task, model, kinds, "
                        "first-positive rank per stage, rank-1 modality, ids); a FILE ending in .csv gets CSV")
    parser.add_argument("--failure-k", type=int, default=10, metavar="K",
                        help="a query whose positives are all missed in the top K is a failure (default 10); "
                        "so is one whose rank-1 result has the wrong modality")
    parser.add_argument("--report", type=Path, metavar="FILE", default=None,
                        help="write the whole workbench report (figures, confusion, failures) as JSON")
    parser.add_argument("--reranker", default=None, metavar="NAME",
                        help="also rerank each query's top --rerank-depth with this reranker (offline: "
                        "mmembed-mini-rerank) and report the first stage and the reranked figures side by side")
    parser.add_argument("--rerank-depth", type=int, default=20, metavar="N",
                        help="first-stage candidates the reranker sees per query (default 20)")
    add_retrieval_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmembed.config import Settings
    from mmembed.distributed import context_from_env, rank_device
    from mmembed.metrics import MetricsAccumulator
    from mmembed.progress import tqdm_progress
    from mmembed.storage import atomic_write
    from mmembed.types import ValidationError
    from mmembed.workbench import load_query_set, run_workbench

    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
        MetricsAccumulator(ks)  # validates the cut-offs with the metrics' own message
    except ValueError as exc:
        raise ValidationError(f"--ks must be comma-separated integers (each at least 1), got {args.ks!r}") from exc
    if args.failure_k < 1:
        raise ValidationError(f"--failure-k must be a positive integer, got {args.failure_k}")
    if args.rerank_depth < 1:
        raise ValidationError(f"--rerank-depth must be a positive integer, got {args.rerank_depth}")
    ctx = context_from_env()
    if ctx is not None:  # under torchrun: each rank on its own GPU, reranker and embedders included
        args.device = rank_device(ctx, args.device or Settings.from_env().device)
    reranker = _reranker(args.reranker, args.device) if args.reranker else None  # refused before any indexing
    # the second embedder is created first (models load lazily), so an unknown name fails before any indexing
    second = _compare_embedder(args) if args.compare else None
    retrievers = [build_retriever(args, progress_bar=not args.json, build_index=ctx is None)]
    if second is not None:
        retrievers.append(_second_retriever(args, second, retrievers[0], build_index=ctx is None))
    query_set = load_query_set(args.queries or Settings.from_env().queries, retrievers[0].corpus,
                               image_root=args.image_root)
    if ctx is None:
        with tqdm_progress(unit="query", disable=args.json) as progress:
            report = run_workbench(query_set, retrievers, mode=args.mode, k=args.failure_k, ks=ks,
                                   progress=progress, reranker=reranker, depth=args.rerank_depth)
    else:
        report = _distributed_report(args, ctx, query_set, retrievers, reranker, ks)
        if report is None:  # not rank 0: its share is with rank 0, which prints the figures
            return 0
    if args.failures is not None:
        text = report.failures_csv() if args.failures.suffix.lower() == ".csv" else report.failures_jsonl()
        atomic_write(args.failures, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if args.report is not None:
        atomic_write(args.report, lambda tmp: tmp.write_text(report.to_json() + "\n", encoding="utf-8"))
    if args.json:
        from mmembed.cli._common import print_json

        print_json(_json_summary(report))
    else:
        print(_markdown(report))
    if args.failures is not None:
        print(f"{len(report.failures())} failure record(s) written to {args.failures}", file=sys.stderr)
    return 0


def _compare_embedder(args: argparse.Namespace) -> Embedder:
    """The --compare embedder. No offline fallback here: comparing a model with the fallback that replaced it
    would print a comparison that is not the one asked for."""
    from mmembed.config import Settings
    from mmembed.embedders import EMBEDDERS
    from mmembed.retriever import embedder_options

    settings = Settings.from_env(device=args.device)
    return EMBEDDERS.get(args.compare, **embedder_options(settings, args.compare))


def _reranker(name: str, device: str | None) -> Reranker:
    """The reranker `name`, refused up front (one line, no model load) when it cannot run here. No offline
    fallback: figures for another reranker than the one asked for would be misleading."""
    from mmembed.config import Settings
    from mmembed.registry import BackendUnavailableError
    from mmembed.rerankers import RERANKERS

    settings = Settings.from_env(device=device)
    reason = RERANKERS.unavailable_reason(name, device=settings.device)  # unknown names raise with the known ones
    if reason is not None:
        raise BackendUnavailableError(f"reranker '{name}' can't run here: {reason} (python -m mmembed prefetch "
                                      f"--reranker {name}; offline, use mmembed-mini-rerank)")
    return RERANKERS.get(name, device=settings.device)


def _second_retriever(args: argparse.Namespace, embedder: Embedder, first: Retriever, *,
                      build_index: bool = True) -> Retriever:
    """The --compare embedder over the first one's corpus, cache folder and index type."""
    from mmembed.progress import tqdm_progress
    from mmembed.retriever import Retriever

    retriever = Retriever(first.corpus, embedder, cache_dir=first.cache_dir, index_type=first.index_type)
    if build_index:
        with tqdm_progress(disable=args.json) as progress:
            retriever.ensure_index(progress)
    return retriever


def _distributed_report(args: argparse.Namespace, ctx: DistContext, query_set: QuerySet,
                        retrievers: list[Retriever], reranker: Reranker | None,
                        ks: tuple[int, ...]) -> WorkbenchReport | None:
    """Under torchrun: every rank embeds its share of each corpus (rank 0 builds the index, the others then
    load it), then ranks and reranks its share of the queries; rank 0 gets the whole report, the others None.
    Rank lines go to stderr, so stdout holds only rank 0's figures (what a one-process eval prints)."""
    from mmembed.distributed import distributed_build, process_group
    from mmembed.progress import tqdm_progress
    from mmembed.workbench.distributed import distributed_workbench

    with process_group(ctx, args.device):
        for retriever in retrievers:
            distributed_build(retriever.corpus, retriever.embedder, retriever.cache_dir, ctx,
                              index_type=retriever.index_type, out=sys.stderr)
            retriever.ensure_index()  # what rank 0 just saved, fingerprint-checked like any cache
        with tqdm_progress(unit="query", disable=args.json or not ctx.is_main) as progress:
            return distributed_workbench(query_set, retrievers, ctx, mode=args.mode, reranker=reranker,
                                         depth=args.rerank_depth, k=args.failure_k, ks=ks, progress=progress)


def _json_summary(report: WorkbenchReport) -> dict[str, Any]:
    """The first model's figures under the keys `eval --json` always had, plus its name, the failure count
    and, with --compare, a `compare` object with the same keys for the second model and the difference."""
    first, *rest = report.models
    data: dict[str, Any] = {**first.stages["first"].to_dict(), "embedder": first.name,
                            "failures": len(_failed(first, "first"))}
    if "reranked" in first.stages:
        data["reranked"] = {**first.stages["reranked"].to_dict(), "embedder": first.name,
                            "failures": len(_failed(first, "reranked"))}
        data["reranker"] = {"name": report.reranker, "depth": report.depth}
    if rest:
        second = rest[0]
        difference = report.to_dict()["difference"]["first"]
        data["compare"] = {**second.stages["first"].to_dict(), "embedder": second.name,
                           "failures": len(second.failures), "recall_difference": difference,
                           "difference_is": f"{second.name} minus {first.name}"}
    return data


def _failed(run: ModelRun, stage: str) -> list:
    """The run's failure records that failed at `stage` ("first" or "reranked")."""
    return [record for record in run.failures if stage in record.stages and record.stages[stage].kinds]


def _markdown(report: WorkbenchReport) -> str:
    parts = []
    for run in report.models:
        reranked = run.stages.get("reranked")
        if reranked is None:
            head, failed = f"{report.queries} queries, {run.name}, mode {report.mode}\n", f"{len(run.failures)}"
        else:
            head = (f"{report.queries} queries, {run.name}, mode {report.mode}; each cell: first stage → "
                    f"reranked by {report.reranker} (top {report.depth})\n")
            failed = f"{len(_failed(run, 'first'))} → {len(_failed(run, 'reranked'))}"
        parts += [head, run.stages["first"].to_markdown(reranked),
                  f"\nfailures (missed in the top {report.k} or wrong modality at rank 1): {failed}\n"]
    difference = report.difference()
    if difference is not None:
        second, first = report.models[1].name, report.models[0].name
        ks = report.models[0].stages["first"].ks
        parts.append(f"difference in recall, {second} minus {first} (points)\n")
        parts.append("| task | " + " | ".join(f"ΔR@{k}" for k in ks) + " |")
        parts.append("|" + "---|" * (1 + len(ks)))
        for task, by_k in difference["first"].items():
            parts.append(f"| {task} | " + " | ".join(f"{100 * by_k[k]:+.1f}" for k in ks) + " |")
    return "\n".join(parts).rstrip()
