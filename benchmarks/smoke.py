"""Every benchmark in its smoke mode, so none can rot unnoticed (CI runs this after the tests).

    .venv/bin/python -m benchmarks.smoke            # all benchmarks/bench_*.py with --smoke
    .venv/bin/python -m benchmarks.smoke bench_ui   # just these

Each script must accept `--smoke` (tiny sizes; it checks the script end to end and measures nothing), exit 0
and print one JSON object whose "smoke" is true. The run fails if any does not. The scripts should take at most
--budget seconds together (60 by default, for an idle machine; scaled up by the load average per CPU when the
machine is shared, since a loaded CPU stretches every script alike): over it is a warning, three times over
(a smoke mode that became a real run) fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def first_json_object(text: str) -> dict:
    """The first JSON object printed (some benchmarks print a markdown table after it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("printed no JSON object")
    value, _ = json.JSONDecoder().raw_decode(text[start:])
    if not isinstance(value, dict):
        raise ValueError(f"printed JSON that is not an object: {type(value).__name__}")
    return value


def run_one(name: str, timeout: float) -> tuple[str | None, float]:
    """(problem or None, seconds) for `python -m benchmarks.<name> --smoke`."""
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"smoke-{name}-") as cache:  # no cache from an earlier run
            done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--smoke"], cwd=HERE.parent,
                                  env={**os.environ, "MMEMBED_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"},
                                  capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout:.0f} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n    ".join(done.stderr.strip().splitlines()[-8:])
        return f"exit code {done.returncode}:\n    {tail}", seconds
    try:
        report = first_json_object(done.stdout)
    except ValueError as exc:
        return f"{exc} (stdout began {done.stdout[:120]!r})", seconds
    if report.get("smoke") is not True:
        return 'its JSON does not say "smoke": true', seconds
    return None, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="benchmark module names (default: every benchmarks/bench_*.py)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds all smoke runs may take together")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one script may take")
    args = parser.parse_args(argv)
    names = args.names or sorted(path.stem for path in HERE.glob("bench_*.py"))
    problems, total = [], 0.0
    for name in names:
        problem, seconds = run_one(name, args.timeout)
        total += seconds
        print(f"{name}: {'ok' if problem is None else 'FAILED'} ({seconds:.1f} s)", flush=True)
        if problem:
            problems.append(f"{name}: {problem}")
    load = os.getloadavg()
    # The budget is for an idle machine; on a shared one each second of ours takes longer in proportion.
    budget = args.budget * max(1.0, load[0] / (os.cpu_count() or 1))
    print(f"{len(names)} benchmark smoke runs in {total:.1f} s (budget {budget:.0f} s: {args.budget:.0f} s scaled by "
          f"the load average {load[0]:.1f} on {os.cpu_count()} CPUs)")
    if total > budget:
        # Over budget is reported; three times over means a smoke mode has become a real run: that fails.
        print(f"warning: the smoke runs took {total:.1f} s, over the {budget:.0f} s budget", file=sys.stderr)
    if total > 3 * budget:
        problems.append(f"took {total:.1f} s together, over three times the {budget:.0f} s budget")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
