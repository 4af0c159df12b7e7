"""The error-inspection workbench: which queries a retriever gets wrong, and how.

`run_workbench` evaluates a query set with one or two embedders (optionally reranked) and returns a
`WorkbenchReport`: Recall@1/5/10 per task for each model and their difference, wrong-modality rates, the
requested x retrieved modality confusion, and failure records. The page's Evaluate tab and
`python -m mmembed eval --failures/--compare` both use it.
"""

from mmembed.workbench.queryfile import MAX_UPLOAD_BYTES, QueryFileError, load_query_set
from mmembed.workbench.report import FAILURE_KINDS, STAGES, FailureRecord, ModelRun, StageOutcome, WorkbenchReport
from mmembed.workbench.run import (
    EvaluationCancelled,
    QuerySet,
    ReportCache,
    queries_digest,
    run_workbench,
)

__all__ = ["FAILURE_KINDS", "MAX_UPLOAD_BYTES", "STAGES", "EvaluationCancelled", "FailureRecord", "ModelRun",
           "QueryFileError", "QuerySet", "ReportCache", "StageOutcome", "WorkbenchReport", "load_query_set",
           "queries_digest", "run_workbench"]
