"""`eval` under torchrun (2 gloo processes on the CPU): the queries are split across ranks, and rank 0 prints
and writes exactly what a one-process eval does; every rank reports its share on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dist_eval_worker import RERANKER, install_fakes
from retrieval_helpers import write_corpus
from test_workbench import ROWS

from mmembed.cli import main
from mmembed.distributed import in_round_robin_order

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent


@pytest.fixture
def eval_files(tmp_path, monkeypatch) -> Path:
    """The workbench's known-ranking corpus and queries (q1..q5) twice over (q6..q10), so each rank has several;
    env for the command line, fakes installed in this process for the one-process runs."""
    corpus = write_corpus(tmp_path / "corpus")
    queries = tmp_path / "corpus/queries.jsonl"
    rows = ROWS + [{**row, "qid": f"q{i + 6}"} for i, row in enumerate(ROWS)]
    queries.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setenv("MMEMBED_CORPUS", str(corpus))
    monkeypatch.setenv("MMEMBED_QUERIES", str(queries))
    install_fakes(monkeypatch.setattr)
    return tmp_path


def torchrun_eval(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1", "MMEMBED_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(HERE / "dist_eval_worker.py"), "eval", *args]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=PROJECT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def rank_lines(stderr: str) -> list[tuple[str, str, str]]:
    return sorted(re.findall(r"rank (\d)/2: embedded (\d+) of (\d+) (queries|items)", stderr))


def test_round_robin_order_is_undone():
    assert in_round_robin_order([[0, 3, 6], [1, 4], [2, 5]]) == list(range(7))
    assert in_round_robin_order([["a"], []]) == ["a"]


def test_two_ranks_write_the_one_process_json_report_and_failures(eval_files, capsys):
    out = eval_files / "out"
    args = ["--embedder", "biased", "--compare", "debiased", "--reranker", RERANKER, "--rerank-depth", "3",
            "--failure-k", "1", "--json"]
    run = torchrun_eval(eval_files / "dist-cache", *args, "--report", str(out / "dist-report.json"),
                        "--failures", str(out / "dist-failures.jsonl"))
    assert main(["eval", *args, "--report", str(out / "one-report.json"),
                 "--failures", str(out / "one-failures.jsonl")]) == 0
    single = json.loads(capsys.readouterr().out)

    assert json.loads(run.stdout) == single  # stdout is the JSON alone: rank lines and progress go to stderr
    assert single["recall"]["overall"]["R@1"] == 0.4 and single["reranked"]["recall"]["overall"]["R@1"] == 0.6
    assert single["compare"]["recall"]["overall"]["R@1"] == 0.6
    # per query: the same failure records, in the same order, for both models and both stages
    failures = (out / "one-failures.jsonl").read_text()
    assert (out / "dist-failures.jsonl").read_text() == failures and len(failures.splitlines()) == 12
    reports = [json.loads((out / f"{name}-report.json").read_text()) for name in ("dist", "one")]
    for report in reports:
        for model in report["models"]:
            assert model.pop("seconds") >= 0  # wall time: the one thing allowed to differ
    assert reports[0] == reports[1]
    # queries q1, q3, q5, q7, q9 on rank 0, the others on rank 1; the 8 items are one shard, so on rank 0
    assert rank_lines(run.stderr) == [("0", "5", "10", "queries"), ("0", "8", "8", "items"), ("0", "8", "8", "items"),
                                      ("1", "0", "8", "items"), ("1", "0", "8", "items"), ("1", "5", "10", "queries")]
    assert f"{len(failures.splitlines())} failure record(s) written" in run.stderr


def test_two_ranks_print_the_one_process_text(eval_files, capsys):
    run = torchrun_eval(eval_files / "dist-cache", "--embedder", "biased", "--failure-k", "5")
    assert main(["eval", "--embedder", "biased", "--failure-k", "5"]) == 0
    single = capsys.readouterr().out
    assert "| overall | 10 | 40.0 | 80.0 | 100.0 |" in single
    assert run.stdout == single
    assert rank_lines(run.stderr)[-1] == ("1", "5", "10", "queries")
