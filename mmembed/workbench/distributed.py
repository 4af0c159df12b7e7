"""run_workbench with the queries split across torchrun ranks (`torchrun ... -m mmembed eval`).

Rank r embeds, searches and (with a reranker) reranks queries r, r + W, r + 2W, ... — round-robin, so a query
file sorted by task spreads its expensive image queries over every rank. Each rank sends its rows to rank 0
as plain tuples (item id, scores, ranks, notes: no corpus items, no query objects — rank 0 has both), and
rank 0 puts them back in file order and computes the figures with the same code a one-process run uses, so
the report is the one-process report. Must run inside `mmembed.distributed.process_group`, with every
retriever's index ready on every rank.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from mmembed.metrics import DEFAULT_KS
from mmembed.types import Hit, Modality
from mmembed.workbench.report import WorkbenchReport
from mmembed.workbench.run import QuerySet, RankedQuery, check_request, model_run, rank_queries

if TYPE_CHECKING:
    from mmembed.corpus import Corpus, EvalQuery
    from mmembed.distributed import DistContext
    from mmembed.progress import ProgressFn
    from mmembed.rerankers.base import Reranker
    from mmembed.retriever import Retriever

# One hit without its item: (item id, score, rank, first-stage score, original rank, notes).
HitRow = tuple[str, float, int, float | None, int | None, tuple[str, ...]]
# One ranked query without the query: (the target its search asked for, its hits).
QueryRow = tuple[str | None, list[HitRow]]


def distributed_workbench(query_set: QuerySet, retrievers: Sequence[Retriever], ctx: DistContext, *,
                          mode: str = "natural", reranker: Reranker | None = None, depth: int = 20, k: int = 10,
                          ks: Sequence[int] = DEFAULT_KS, progress: ProgressFn | None = None,
                          out: TextIO | None = None) -> WorkbenchReport | None:
    """run_workbench's report on rank 0 (None on the other ranks), each rank having ranked its share.

    Every rank prints `rank R/W: embedded N of M queries` to `out` (default stderr: stdout is rank 0's
    report). `progress` counts this rank's own queries.
    """
    check_request(query_set, retrievers, k, depth)
    ks = tuple(sorted(set(ks)))
    queries = query_set.queries
    mine = [queries[i] for i in range(ctx.rank, len(queries), ctx.world_size)]
    runs = []
    for position, retriever in enumerate(retrievers):
        started = time.perf_counter()
        ranked = rank_queries(mine, retriever, mode, reranker, depth, k, ks, progress,
                              done_before=position * len(mine), total=len(retrievers) * len(mine))
        gathered = _gather({stage: [_query_row(row) for row in rows] for stage, rows in ranked.items()}, ctx)
        if gathered is not None:
            whole = {stage: _ranked(rows, queries, retriever.corpus) for stage, rows in gathered.items()}
            runs.append(model_run(whole, retriever, mode, k, ks, time.perf_counter() - started))
    print(f"rank {ctx.rank}/{ctx.world_size}: embedded {len(mine)} of {len(queries)} queries",
          file=out or sys.stderr, flush=True)
    if not ctx.is_main:
        return None
    return WorkbenchReport(query_set.name, query_set.digest, len(queries), mode, k,
                           reranker.name if reranker else None, depth if reranker else None, runs)


def _gather(rows: dict[str, list[QueryRow]], ctx: DistContext) -> dict[str, list[QueryRow]] | None:
    """Every rank's rows, stage by stage, in the query file's order, on rank 0 (None on the others)."""
    from mmembed.distributed import gather_to_main, in_round_robin_order

    by_rank = gather_to_main(rows, ctx)
    if by_rank is None:
        return None
    return {stage: in_round_robin_order([part[stage] for part in by_rank]) for stage in rows}


def _query_row(row: RankedQuery) -> QueryRow:
    hits = [(hit.item.id, hit.score, hit.rank, hit.first_stage_score, hit.original_rank, hit.notes)
            for hit in row.hits]
    return (row.target.value if row.target is not None else None, hits)


def _ranked(rows: list[QueryRow], queries: Sequence[EvalQuery], corpus: Corpus) -> list[RankedQuery]:
    """The rows back as RankedQuery objects over rank 0's own queries and corpus items."""
    return [RankedQuery(query, tuple(Hit(corpus[item_id], score, rank, first, original, notes)
                                     for item_id, score, rank, first, original, notes in hits),
                        Modality(target) if target is not None else None)
            for query, (target, hits) in zip(queries, rows, strict=True)]
