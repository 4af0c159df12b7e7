"""What the index cache's integrity checks cost at start-up, printed as JSON (figures, not tests).

    .venv/bin/python -m benchmarks.bench_cache_check --smoke      # 20k vectors, seconds: checks the script
    .venv/bin/python -m benchmarks.bench_cache_check --repeats 2  # 1M x 512-d flat index (2 GB file)

A flat index of n random unit vectors is saved through mmembed.index (which records the file's size and
xxh3-128 checksum), then loaded the way a server starts, best of --repeats, with each verify mode:
  * "size": fingerprint, metadata checksum (its own figure too), size check, structure checks (dim, count,
    metric, type), the ids against the corpus;
  * "sync": the same plus the full checksum before the first query;
  * "background": the same as "size", with the full checksum in a thread (the default): start-up
    waits for none of it; the JSON says when the check finished and what a query cost meanwhile.
The file was just written, so it is read from the page cache; a cold disk adds its read time to both
`faiss.read_index` and the checksum. The machine may be shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmembed.checksums import file_checksum
from mmembed.index import VectorIndex, _load_index, _save_index, metadata_checksum
from mmembed.storage import read_json


@dataclass(frozen=True)
class _Row:
    id: str


class _Pool:
    """What _load_index reads of a corpus: its length and its items' ids, in order (no images needed)."""

    def __init__(self, n: int) -> None:
        self.items = [_Row(f"item-{i:07d}") for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def _build_flat(n: int, dim: int, seed: int = 0) -> VectorIndex:
    """A flat index of n random unit vectors, added in blocks: the vectors are never held twice."""
    import faiss

    rng = np.random.default_rng(seed)
    flat = faiss.IndexFlatIP(dim)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        flat.add(block / np.linalg.norm(block, axis=1, keepdims=True))
    codes = np.zeros(n, dtype=np.int8)  # every row "image": the modality codes only need the right length
    return VectorIndex(flat, [f"item-{i:07d}" for i in range(n)], codes, "flat")


def _best_s(fn, repeats: int) -> float:
    """Fastest of `repeats` calls; each result is dropped before the next call (one index in memory)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        del result
    return min(times)


def _available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="20k vectors, 1 repeat: checks the script only")
    parser.add_argument("--workdir", type=Path, default=None, help="where the index is written (default: a temp dir)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.repeats = 20_000, 1
    import faiss

    faiss.omp_set_num_threads(1)
    needed = 3 * args.n * args.dim * 4  # the index while saving, one loaded copy, and some page cache
    if _available_bytes() < needed:
        raise SystemExit(f"needs about {needed / 2**30:.1f} GB of free memory, {_available_bytes() / 2**30:.1f} GB "
                         "available: not started (the machine is shared); try later or a smaller --dim")
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        pool = _Pool(args.n)
        index = _build_flat(args.n, args.dim)
        fingerprint = {"format_version": 1, "embedder": "bench", "corpus": "bench", "corpus_hash": "x",
                       "dim": args.dim, "count": args.n, "index_type": "flat"}
        started = time.perf_counter()
        _save_index(folder, index, fingerprint)
        save_s = time.perf_counter() - started
        del index
        index_file = folder / "index-flat.faiss"
        checksum_s = _best_s(lambda: file_checksum(index_file), args.repeats)
        meta = read_json(folder / "index-flat.json")
        body = {key: value for key, value in meta.items() if key != "checksum"}
        meta_checksum_s = _best_s(lambda body=body: metadata_checksum(body), args.repeats)  # in every mode's start-up
        del meta
        read_s = _best_s(lambda: faiss.read_index(str(index_file)), args.repeats)
        modes = {}
        for mode in ("size", "sync", "background"):
            times = []
            for _ in range(args.repeats):
                tick = time.perf_counter()
                loaded = _load_index(folder, "flat", fingerprint, pool, mode)
                times.append(time.perf_counter() - tick)  # "background": until it returns, not until checked
                assert loaded is not None, f"the {mode} load rebuilt: the benchmark's index did not verify"
                if loaded.check is not None:
                    assert loaded.check.wait() is None, loaded.check.problem
                del loaded  # one loaded index in memory at a time
            modes[mode] = round(min(times), 3)
        # Queries while the background check runs (hashing releases the GIL) and after it finished.
        loaded = _load_index(folder, "flat", fingerprint, pool, "background")
        started = time.perf_counter()
        query = np.random.default_rng(1).standard_normal((1, args.dim), dtype=np.float32)
        during = []
        while not loaded.check.done:
            tick = time.perf_counter()
            loaded.search(query, 10)
            during.append(time.perf_counter() - tick)
        check_done_s = time.perf_counter() - started
        after = []
        for _ in range(max(5, len(during))):
            tick = time.perf_counter()
            loaded.search(query, 10)
            after.append(time.perf_counter() - tick)
        assert loaded.check.problem is None, loaded.check.problem
        report = {
            "smoke": args.smoke,
            "n": args.n,
            "dim": args.dim,
            "index_file_mb": round(index_file.stat().st_size / 2**20, 1),
            "save_with_checksum_s": round(save_s, 3),
            "checksum_alone_s": round(checksum_s, 3),
            "metadata_checksum_s": round(meta_checksum_s, 3),
            "checksum_gb_per_s": round(index_file.stat().st_size / 2**30 / checksum_s, 2),
            "faiss_read_index_s": round(read_s, 3),
            "startup_s": modes,
            "startup_added_by_sync_checksum_s": round(modes["sync"] - modes["size"], 3),
            "startup_added_by_background_checksum_s": round(modes["background"] - modes["size"], 3),
            "background_check_finished_after_s": round(check_done_s, 3),
            "query_ms_median_during_check": round(1000 * statistics.median(during), 2) if during else None,
            "queries_during_check": len(during),
            "query_ms_median_after_check": round(1000 * statistics.median(after), 2),
            "repeats": args.repeats,
            "page_cache": "warm (the file was just written)",
            "load_average_at_start": load_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
