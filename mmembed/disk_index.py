"""An index for pools that do not fit in RAM: IVF-PQ with its inverted lists on disk, and an exact
re-scoring of each query's shortlist from float16 vectors that also stay on disk.

Why this shape (FAISS's own recipe for billion-scale, not a home-made one):
  * IVF-PQ is trained once on a sample; every other vector is only *encoded* (64 bytes at 512-d with
    64x8-bit codes), so the pool is filled shard by shard and never held in memory as a whole;
  * each shard's inverted lists are written to their own file as soon as it is encoded, so a killed
    build resumes at the first missing shard; at the end FAISS merges the shards into one
    `OnDiskInvertedLists` file that searches memory-map (only the lists a query probes are read);
  * PQ codes alone cap recall@10 well below 0.9 at 512-d, so the `k * refine` best codes are re-scored
    exactly from the float16 copy of the vectors: a query reads ~k*refine rows of it with positioned reads
    (`RowFile`), not through a memory map: the kernel maps whole neighbourhoods of pages into a mapping on
    every fault, and a 10M-vector run's resident size grew to 6.9 GB of mapped file pages that way.

Folder layout:
    meta.json                 fingerprint + build parameters; `complete` once merged
    trained.faiss             the empty IVF-PQ after training (coarse centroids + PQ codebooks)
    shards/shard-NNNNN.faiss  one encoded shard (exists only once its vectors are written too)
    lists.faiss, lists.ivfdata    the merged index; its inverted lists are in lists.ivfdata (read by FAISS)
    vectors.f16               (count, dim) float16, row i = item i, for exact re-scoring
    modalities.npy            int8 modality code per row, for filtered (target-modality) search
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.progress import ProgressFn, report
from mmembed.storage import atomic_save_npy, atomic_write, atomic_write_json, read_json
from mmembed.types import MMEmbedError, Modality

if TYPE_CHECKING:
    import numpy as np

DISK_FORMAT_VERSION = 1
DEFAULT_NPROBE = 32
# Exact re-scoring of k * REFINE_FACTOR PQ candidates: at 512-d, 64x8-bit codes alone rank the true
# neighbours inside the top 100-200 but rarely in the exact order (recall@10 ~0.6 without it).
REFINE_FACTOR = 16
# Training k-means for the coarse lists wants ~40-256 points per list; more only costs time.
TRAIN_POINTS_PER_LIST = 64


class DiskIndexWarning(UserWarning):
    """A disk index folder was stale or damaged and is being rebuilt (in part or in whole)."""


def default_nlist(count: int) -> int:
    """Coarse lists for `count` vectors: about sqrt(n), a power of two, 1..65536.

    FAISS suggests 4*sqrt(n) to 16*sqrt(n) lists for speed at search time, but k-means over that many
    centroids is what a 2-core build cannot afford (16384 lists at 10M vectors: ~1 h of training);
    sqrt(n) keeps training to minutes and a probe of 32 lists to a few ms.
    """
    import math

    target = max(1, int(math.sqrt(max(count, 1))))
    return int(min(65536, 2 ** round(math.log2(target))))


def pq_subquantizers(dim: int) -> int:
    """64 sub-quantizers (8 dims each at 512-d) when the dimension allows; fewer for small dims."""
    return next(m for m in (64, 32, 16, 8, 4, 2, 1) if dim % m == 0 and m <= dim)


def sample_rows(count: int, size: int, seed: int = 0) -> np.ndarray:
    """`size` distinct row numbers of `count`, sorted (so reading them from shards is sequential)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if size >= count:
        return np.arange(count, dtype=np.int64)
    return np.sort(rng.choice(count, size=size, replace=False)).astype(np.int64)


class RowFile:
    """Rows of a (count, dim) float16 file, fetched with `os.pread` into the process's own small buffers.

    A memory map would serve the same bytes from the page cache, but every page fault maps its cached
    neighbours into the process too (fault-around), so scattered reads of a few rows per query made the
    resident size grow by gigabytes of file pages. `pread` copies only the rows asked for.
    """

    def __init__(self, path: Path, count: int, dim: int) -> None:
        import weakref

        self.path, self.shape = Path(path), (int(count), int(dim))
        self._row_bytes = self.shape[1] * 2
        size = self.path.stat().st_size
        if size != self.shape[0] * self._row_bytes:
            raise ValueError(f"{self.path.name} holds {size} bytes, expected {self.shape[0] * self._row_bytes}")
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        import numpy as np

        wanted = np.asarray(rows, dtype=np.int64).reshape(-1)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= self.shape[0]):
            raise IndexError(f"row out of range 0..{self.shape[0] - 1}")
        out = np.empty((wanted.size, self.shape[1]), dtype=np.float16)
        for i, row in enumerate(wanted.tolist()):
            out[i] = np.frombuffer(os.pread(self._fd, self._row_bytes, row * self._row_bytes), dtype=np.float16)
        return out


@dataclass
class DiskIndex:
    """A merged on-disk IVF-PQ index plus the float16 vectors and modality codes of its rows.

    `search` has VectorIndex's contract: (scores, row numbers) per query, rows padded with -1 when fewer
    than k match; `only` restricts to one modality (or its int8 code; a FAISS ID selector on a bitmap), so
    the Retriever uses it as it uses a VectorIndex.
    """

    folder: Path
    faiss_index: Any
    vectors: RowFile  # (count, dim) float16 rows on disk, read row by row
    modalities: np.ndarray  # int8 per row
    nprobe: int = DEFAULT_NPROBE
    refine_factor: int = REFINE_FACTOR
    index_type: str = "ivfpq-disk"
    ids: list[str] | None = None  # item ids per row, when the caller has them (mmembed.index sets them)
    _bitmaps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, queries: np.ndarray, k: int, only: int | Modality | None = None) -> tuple[
            np.ndarray, np.ndarray]:
        import faiss
        import numpy as np

        if isinstance(only, Modality):
            from mmembed.index import modality_code

            only = modality_code(only)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise MMEmbedError(f"query has dimension {queries.shape[1]} but the index has {self.dim}")
        k = max(1, min(int(k), len(self)))
        shortlist = k * max(1, self.refine_factor)
        selector = self._selector(only) if only is not None else None
        nprobe = self.nprobe
        nlist = int(faiss.extract_index_ivf(self.faiss_index).nlist)
        while True:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe) if selector is not None else \
                faiss.SearchParametersIVF(nprobe=nprobe)
            _, rows = self.faiss_index.search(queries, shortlist, params=params)
            # A rare modality can be absent from the probed lists: widen the probe rather than return
            # fewer than k rows (the same guarantee VectorIndex gives for filtered search).
            short = bool((rows[:, k - 1] < 0).any())
            if selector is None or not short or nprobe >= nlist:
                break
            nprobe = min(nlist, nprobe * 4)
        return self._rescore(queries, rows, k)

    def _rescore(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of each query with its shortlist (read from the float16 file), top k."""
        import numpy as np

        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (query, found) in enumerate(zip(queries, rows, strict=True)):
            candidates = np.unique(found[found >= 0])  # sorted: the reads go forward through the file
            if candidates.size == 0:
                continue
            scores = self.vectors[candidates].astype(np.float32) @ query
            top = np.argsort(-scores, kind="stable")[:k]
            out_scores[i, : top.size] = scores[top]
            out_rows[i, : top.size] = candidates[top]
        return out_scores, out_rows

    def _selector(self, code: int) -> Any:
        import faiss
        import numpy as np

        bitmap = self._bitmaps.get(code)
        if bitmap is None:
            # FAISS reads bit j of the bitmap as byte j >> 3, bit j & 7 (little-endian bit order).
            bitmap = self._bitmaps[code] = np.packbits(self.modalities == code, bitorder="little")
        return faiss.IDSelectorBitmap(len(self.modalities), faiss.swig_ptr(bitmap))


@contextmanager
def _faiss_chatter_to_stderr() -> Iterator[None]:
    """FAISS's C++ code prints notes ("resizing ...", "updating ondisk filename ...") on stdout, where they
    would corrupt a CLI's or benchmark's JSON output: send file descriptor 1 to stderr meanwhile."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _files(folder: Path) -> dict[str, Path]:
    return {"meta": folder / "meta.json", "trained": folder / "trained.faiss", "shards": folder / "shards",
            "lists": folder / "lists.faiss", "ivfdata": folder / "lists.ivfdata", "vectors": folder / "vectors.f16",
            "modalities": folder / "modalities.npy"}


def build_disk_index(folder: Path, *, count: int, dim: int, shard_size: int,
                     read_shard: Callable[[int], np.ndarray], modalities: np.ndarray,
                     fingerprint: dict[str, Any], train_size: int | None = None, nlist: int | None = None,
                     progress: ProgressFn | None = None, log: Callable[[str], None] | None = None) -> DiskIndex:
    """Build (or resume building) the disk index of `count` vectors in `folder`.

    read_shard(s) returns shard s's rows, rows [s * shard_size, min(count, (s + 1) * shard_size)), as
    float32 unit vectors; it is called once per shard for encoding plus once per shard holding training
    rows, so no more than one shard (and the training sample) is in memory at a time. `fingerprint`
    names what the vectors are (model, corpus); a folder made for another fingerprint is rebuilt.
    """
    import numpy as np

    folder = Path(folder)
    files = _files(folder)
    nlist = nlist or default_nlist(count)
    n_shards = (count + shard_size - 1) // shard_size
    train_size = min(count, train_size or max(nlist * TRAIN_POINTS_PER_LIST, 256 * 40))
    expected = {"format_version": DISK_FORMAT_VERSION, "fingerprint": fingerprint, "count": int(count),
                "dim": int(dim), "shard_size": int(shard_size), "nlist": int(nlist),
                "pq": f"{pq_subquantizers(dim)}x8", "train_size": int(train_size)}
    meta = read_json(files["meta"])
    if isinstance(meta, dict) and meta.get("build") == expected and meta.get("complete"):
        loaded = _open(folder, meta)
        if loaded is not None:
            return loaded
        meta = {"build": expected, "complete": False}  # re-merge from the shards if they are still there
    if not isinstance(meta, dict) or meta.get("build") != expected:
        if folder.exists() and any(folder.iterdir()):
            warnings.warn(f"disk index {folder} was built for other vectors or settings; rebuilding it",
                          DiskIndexWarning, stacklevel=2)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(files["meta"], {"build": expected, "complete": False})
    if len(modalities) != count:
        raise MMEmbedError(f"{len(modalities)} modality codes for {count} vectors")
    atomic_save_npy(files["modalities"], np.asarray(modalities, dtype=np.int8))

    trained = _train(files, expected, read_shard, shard_size, n_shards, log)
    _encode_shards(files, trained, count, dim, shard_size, n_shards, read_shard, progress, log)
    return _merge(folder, files, expected, n_shards, log)


def _train(files: dict[str, Path], build: dict[str, Any], read_shard: Callable[[int], np.ndarray],
           shard_size: int, n_shards: int, log: Callable[[str], None] | None) -> Any:
    """The trained, empty IVF-PQ: read back if a previous run saved it, else trained on a row sample."""
    import faiss
    import numpy as np

    if files["trained"].exists():
        try:
            return faiss.read_index(str(files["trained"]))
        except RuntimeError as exc:
            warnings.warn(f"trained index unreadable ({str(exc).splitlines()[0][:100]}); training again",
                          DiskIndexWarning, stacklevel=3)
    rows = sample_rows(build["count"], build["train_size"])
    sample = np.empty((rows.size, build["dim"]), dtype=np.float32)
    filled = 0
    for shard in np.unique(rows // shard_size):
        wanted = rows[(rows // shard_size) == shard] - shard * shard_size
        sample[filled : filled + wanted.size] = read_shard(int(shard))[wanted]
        filled += wanted.size
    if log:
        log(f"training IVF{build['nlist']},PQ{build['pq']} on {rows.size:,} sampled vectors")
    m = pq_subquantizers(build["dim"])
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(build["dim"]), build["dim"], build["nlist"], m, 8,
                             faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    atomic_write(files["trained"], lambda tmp: faiss.write_index(index, str(tmp)))
    return index


def _encode_shards(files: dict[str, Path], trained: Any, count: int, dim: int, shard_size: int, n_shards: int,
                   read_shard: Callable[[int], np.ndarray], progress: ProgressFn | None,
                   log: Callable[[str], None] | None) -> None:
    """Encode every shard not yet on disk; its float16 rows are written before its shard file, so an existing
    shard file always means both are complete (a killed build resumes at the first missing one)."""
    import faiss
    import numpy as np

    files["shards"].mkdir(parents=True, exist_ok=True)
    size = count * dim * 2
    if not files["vectors"].exists() or files["vectors"].stat().st_size != size:
        with files["vectors"].open("wb") as handle:  # sparse until written: no RAM, no disk up front
            handle.truncate(size)
        for stale in files["shards"].glob("shard-*.faiss"):
            stale.unlink()  # their float16 rows are gone with the old file
    done = 0
    report(progress, 0, count, "encoding shards")
    fd = os.open(files["vectors"], os.O_WRONLY)
    try:
        for shard in range(n_shards):
            start, stop = shard * shard_size, min(count, (shard + 1) * shard_size)
            path = files["shards"] / f"shard-{shard:05d}.faiss"
            if not path.exists():
                vectors = np.ascontiguousarray(read_shard(shard), dtype=np.float32)
                if vectors.shape != (stop - start, dim):
                    raise MMEmbedError(f"shard {shard} has shape {vectors.shape}, expected ({stop - start}, {dim})")
                os.pwrite(fd, vectors.astype(np.float16).tobytes(), start * dim * 2)
                os.fsync(fd)
                part = faiss.clone_index(trained)
                part.add_with_ids(vectors, np.arange(start, stop, dtype=np.int64))
                atomic_write(path, lambda tmp, part=part: faiss.write_index(part, str(tmp)))
                del part, vectors
            done = stop
            report(progress, done, count, "encoding shards")
            if log and (shard + 1) % max(1, n_shards // 10) == 0:
                log(f"encoded {done:,} of {count:,} vectors")
    finally:
        os.close(fd)


def _merge(folder: Path, files: dict[str, Path], build: dict[str, Any], n_shards: int,
           log: Callable[[str], None] | None) -> DiskIndex:
    """Merge the shards' inverted lists into one on-disk file, then drop the shard files."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    if log:
        log(f"merging {n_shards} shards into {files['ivfdata'].name}")
    for stale in (files["ivfdata"], files["lists"]):
        stale.unlink(missing_ok=True)
    index = faiss.read_index(str(files["trained"]))
    shard_files = [str(files["shards"] / f"shard-{shard:05d}.faiss") for shard in range(n_shards)]
    with _faiss_chatter_to_stderr():
        merge_ondisk(index, shard_files, str(files["ivfdata"].resolve()))
    atomic_write(files["lists"], lambda tmp: faiss.write_index(index, str(tmp)))
    meta = {"build": build, "complete": True}
    atomic_write_json(files["meta"], meta)
    shutil.rmtree(files["shards"], ignore_errors=True)
    opened = _open(folder, meta)
    if opened is None:
        raise MMEmbedError(f"the disk index just written to {folder} cannot be read back")
    return opened


def _open(folder: Path, meta: dict[str, Any]) -> DiskIndex | None:
    """The index in `folder`, or None (with a warning) when a file is missing or does not match meta."""
    import faiss
    import numpy as np

    files = _files(folder)
    build = meta["build"]
    try:
        # ONDISK_SAME_DIR: the lists file is looked up beside lists.faiss, so the folder can be moved.
        # (Not IO_FLAG_MMAP: with it FAISS 1.15 crashes searching OnDiskInvertedLists.)
        with _faiss_chatter_to_stderr():
            index = faiss.read_index(str(files["lists"]), faiss.IO_FLAG_ONDISK_SAME_DIR)
        modalities = np.load(files["modalities"], allow_pickle=False)
        vectors = RowFile(files["vectors"], build["count"], build["dim"])
    except (RuntimeError, OSError, ValueError) as exc:
        warnings.warn(f"disk index {folder} is incomplete or damaged ({str(exc).splitlines()[0][:120]}); "
                      "rebuilding it", DiskIndexWarning, stacklevel=3)
        return None
    if index.ntotal != build["count"] or index.d != build["dim"] or len(modalities) != build["count"]:
        warnings.warn(f"disk index {folder} holds {index.ntotal} vectors of dimension {index.d}, expected "
                      f"{build['count']} of {build['dim']}; rebuilding it", DiskIndexWarning, stacklevel=3)
        return None
    return DiskIndex(folder, index, vectors, modalities.astype("int8"))


def open_disk_index(folder: Path) -> DiskIndex:
    """A complete disk index from `folder` (as built by build_disk_index); a clear error otherwise."""
    meta = read_json(_files(Path(folder))["meta"])
    if not isinstance(meta, dict) or not meta.get("complete"):
        raise MMEmbedError(f"no complete disk index in {folder}; build it first")
    index = _open(Path(folder), meta)
    if index is None:
        raise MMEmbedError(f"the disk index in {folder} is damaged; rebuild it")
    return index
