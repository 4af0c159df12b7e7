"""FAISS inner-product index over corpus embeddings, with a fingerprinted, resumable on-disk cache.

Cache layout (one folder per corpus and embedder):
    <cache_dir>/indexes/<corpus>/<embedder>-<hash of its fingerprint>/
        embeddings/fingerprint.json   embedder fingerprint, corpus hash, dim, shard size, format version
        embeddings/shard-00000.npy    float32 rows, SHARD_SIZE per shard: an interrupted build resumes
        embeddings/shard-00000.json   the shard's size and checksum
        index-<type>.faiss, index-<type>.json   the FAISS index; its fingerprint, item ids, the index
                                      file's size and checksum, and a checksum of this metadata itself
Every file is written atomically. A fingerprint mismatch, an unreadable file, an index whose dimension,
count, metric or type is not the fingerprint's, or a file that does not match its checksum is rebuilt
with a warning, never silently used. The index file's size is checked at once and its checksum in a
background thread (`verify="background"`, the default), so a large index starts serving without waiting;
`Retriever` rebuilds when that check fails. A cache folder that cannot be written (read-only, full)
gives one warning and an index kept in memory for the run.

Filtered search restricts FAISS itself to the target modality with an ID selector, so k results of
the wanted modality come back without over-fetching and dropping.
"""

# long: the index and its on-disk cache (load, verify, save) share the fingerprint and file layout above;
# the cache half (CacheWrites, checks) is the next piece to move out, to its own module.
from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.checksums import (
    BackgroundCheck,
    bytes_checksum,
    checksum_problem,
    file_record,
    json_checksum,
    size_problem,
)
from mmembed.images import ImageLoadError
from mmembed.progress import ProgressFn, report
from mmembed.storage import atomic_save_npy, atomic_write, atomic_write_json, read_json
from mmembed.types import MMEmbedError, Modality, ValidationError

if TYPE_CHECKING:
    import numpy as np

    from mmembed.corpus import Corpus
    from mmembed.embedders.base import Embedder

FORMAT_VERSION = 1
SHARD_SIZE = 256
# ivfpq-disk: for pools larger than RAM (mmembed.disk_index): lists and vectors stay on disk.
INDEX_TYPES = ("flat", "hnsw", "ivfpq", "ivfpq-disk")
# The disk index encodes this many cache shards at a time (~100k items): few, large shard files to merge.
DISK_SHARD_FACTOR = 400
VERIFY_MODES = ("background", "sync", "size")
# The FAISS class each index type is saved as (read_index returns it): another class is another index.
_FAISS_CLASSES = {"flat": {"IndexFlatIP", "IndexFlat"}, "hnsw": {"IndexHNSWFlat"}, "ivfpq": {"IndexRefineFlat"}}
_MODALITY_CODES = {modality: code for code, modality in enumerate(Modality)}

# HNSW: 32 links per node and a wide search beam keep recall@10 >= 0.95 at 1M vectors.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 32
# IVF-PQ codes are coarse: re-rank k * IVF_REFINE_K_FACTOR candidates exactly (cheap next to the
# coarse search; with 4 recall@10 on 1M vectors stayed near 0.87).
IVF_REFINE_K_FACTOR = 16
# Filtered search on an approximate index: a modality with at most this many items is searched exactly
# (its vectors, reconstructed once, take SUBSET_EXACT_MAX * dim * 4 bytes: 100 MB at 512-d).
SUBSET_EXACT_MAX = 50_000


# IVF-PQ must train its coarse lists and codebooks on the pool itself; below this many vectors the
# training is meaningless (FAISS refuses outright under 2**nbits points) and exact search is faster anyway.
IVFPQ_MIN_ITEMS = 1000


def modality_code(modality: Modality) -> int:
    """The int8 code a modality has in an index's per-row modality array."""
    return _MODALITY_CODES[modality]


def effective_index_type(index_type: str, n: int) -> str:
    """The index type actually built for `n` vectors: ivfpq on a tiny pool becomes exact (flat)."""
    if index_type not in INDEX_TYPES:
        raise ValidationError(f"unknown index type {index_type!r}; use one of: {', '.join(INDEX_TYPES)}")
    if index_type in ("ivfpq", "ivfpq-disk") and n < IVFPQ_MIN_ITEMS:
        warnings.warn(f"ivfpq needs at least {IVFPQ_MIN_ITEMS} items to train; the {n}-item pool uses exact "
                      "(flat) search instead", stacklevel=3)
        return "flat"
    return index_type


class IndexCacheWarning(UserWarning):
    """A cached index or embedding file was stale or corrupt and is being rebuilt."""


class CacheNotWritableWarning(IndexCacheWarning):
    """The cache folder cannot be written: the index lives in memory for this run."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


def cache_folder(cache_dir: Path, corpus_name: str, embedder_name: str, embedder_fingerprint: str) -> Path:
    digest = hashlib.sha256(embedder_fingerprint.encode()).hexdigest()[:12]
    return Path(cache_dir) / "indexes" / _slug(corpus_name) / f"{_slug(embedder_name)}-{digest}"


@dataclass
class VectorIndex:
    """A FAISS index plus the id and modality of each row (row i of the index is item i)."""

    faiss_index: Any
    ids: list[str]
    modalities: np.ndarray  # int8 code per row, see _MODALITY_CODES
    index_type: str = "flat"
    # Approximate indexes search a small modality subset exactly (see search); its vectors are cached here.
    _subsets: dict[Modality, Any] = field(default_factory=dict, repr=False, compare=False)
    # Loaded from the cache: the checksum verification of its file, possibly still running (see Retriever).
    check: BackgroundCheck | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], modalities: Sequence[Modality],
              index_type: str = "flat") -> VectorIndex:
        import numpy as np

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"expected ({len(ids)}, dim) vectors, got shape {vectors.shape}")
        index_type = effective_index_type(index_type, len(vectors))
        index = make_faiss_index(vectors, index_type)
        codes = np.array([_MODALITY_CODES[Modality.parse(m)] for m in modalities], dtype=np.int8)
        return cls(index, list(ids), codes, index_type)

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, vectors: np.ndarray, k: int, only: Modality | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row numbers) per query row; `only` restricts results to one modality.

        Rows with fewer than k matches are padded by FAISS with row -1; callers skip those.
        """
        import faiss
        import numpy as np

        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise MMEmbedError(f"query has dimension {queries.shape[1]} but the index has {self.dim}")
        k = max(1, min(int(k), len(self)))
        selector = None
        if only is not None:
            rows = np.flatnonzero(self.modalities == _MODALITY_CODES[only]).astype(np.int64)
            if rows.size == 0:
                empty = np.empty((len(queries), 0))
                return empty.astype(np.float32), empty.astype(np.int64)
            k = min(k, int(rows.size))
            if self.index_type != "flat" and rows.size <= SUBSET_EXACT_MAX:
                # An HNSW graph or IVF lists filtered down to a few percent of the pool lose their way
                # (they return nothing for a rare modality); a small subset is searched exactly instead.
                return self._search_subset(queries, k, only, rows)
            selector = faiss.IDSelectorBatch(rows)
        params = self._search_params(selector)
        scores, found = self.faiss_index.search(queries, k, params=params) if params else \
            self.faiss_index.search(queries, k)
        if selector is not None and self.index_type != "flat" and bool((found < 0).any()):
            return self._search_subset(queries, k, only, rows)  # the approximate search came up short
        return scores, found

    def _search_subset(self, queries: np.ndarray, k: int, only: Modality, rows: np.ndarray) -> tuple[
            np.ndarray, np.ndarray]:
        """Exact top-k among `rows` (the items of modality `only`), from their stored vectors."""
        import numpy as np

        vectors = self._subsets.get(only)
        if vectors is None:
            vectors = self._subsets[only] = self.faiss_index.reconstruct_batch(rows)
        scores = queries @ vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
            np.tile(np.arange(scores.shape[1]), (len(queries), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return (np.take_along_axis(top_scores, order, axis=1).astype(np.float32),
                rows[np.take_along_axis(top, order, axis=1)].astype(np.int64))

    def _search_params(self, selector: Any) -> Any:
        import faiss

        if self.index_type == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, 0))
        if self.index_type == "ivfpq":
            # IndexRefine wraps the IVF-PQ index; its search parameters carry the base index's.
            base = faiss.SearchParametersIVF(sel=selector, nprobe=IVF_NPROBE)
            return faiss.IndexRefineSearchParameters(k_factor=IVF_REFINE_K_FACTOR, base_index_params=base, sel=selector)
        return faiss.SearchParameters(sel=selector) if selector is not None else None


def make_faiss_index(vectors: np.ndarray, index_type: str) -> Any:
    """An inner-product FAISS index of `index_type`, trained (if it needs it) and filled with `vectors`."""
    import faiss

    n, dim = vectors.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:  # ivfpq: coarse lists + product quantisation, exact re-ranking of a short list for recall
        nlist = max(1, min(2048, n // 40))  # FAISS wants ~40 training points per list
        m = next(d for d in (64, 32, 16, 8, 4, 2, 1) if dim % d == 0 and d <= dim)
        nbits = 8 if n >= 256 * 40 else 4  # fewer centroids when there is little data to train them
        quantizer = faiss.IndexFlatIP(dim)
        ivfpq = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        ivfpq.nprobe = IVF_NPROBE
        index = faiss.IndexRefineFlat(ivfpq)
        index.k_factor = IVF_REFINE_K_FACTOR
        index.train(vectors)
    index.add(vectors)
    return index


def _fingerprint(embedder: Embedder, corpus: Corpus, **extra: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "embedder": embedder.fingerprint,
        "corpus": corpus.name,
        "corpus_hash": corpus.content_hash,
        "dim": int(embedder.dim),
        "count": len(corpus),
        **extra,
    }


def embedding_fingerprint(corpus: Corpus, embedder: Embedder, shard_size: int = SHARD_SIZE) -> dict[str, Any]:
    """What the embedding shards of (corpus, embedder) must have been made from to be reused."""
    return _fingerprint(embedder, corpus, shard_size=shard_size)


def shard_bounds(n_items: int, shard_size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    """(start, stop) item rows of each embedding shard."""
    return [(start, min(start + shard_size, n_items)) for start in range(0, n_items, shard_size)]


class CacheWrites:
    """Writes to one cache folder that stop, with ONE warning, at the first that fails (read-only, full disk).

    The index is then built and kept in memory for the run: queries work, and the next start tries again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ok = True

    def __call__(self, write: Any, *args: Any) -> bool:
        """Run `write(*args)` unless an earlier write failed; False when nothing was written."""
        if not self.ok:
            return False
        try:
            write(*args)
            return True
        except OSError as exc:
            self.ok = False
            why = exc.strerror or type(exc).__name__
            warnings.warn(f"the index cache {self.folder} cannot be written ({why}); the index is built in memory "
                          "for this run and rebuilt at the next start. Make the folder writable or set "
                          "MMEMBED_CACHE_DIR to one that is.", CacheNotWritableWarning, stacklevel=4)
            return False

    def remove(self, path: Path) -> None:
        self(lambda: path.unlink(missing_ok=True))


def prepare_embedding_cache(corpus: Corpus, embedder: Embedder, folder: Path,
                            shard_size: int = SHARD_SIZE, writes: CacheWrites | None = None) -> dict[str, Any]:
    """Check the shard cache's fingerprint; shards of another model or corpus version are removed (warning).

    Returns the expected fingerprint. In a distributed build only rank 0 calls this, before any rank writes.
    """
    writes = writes or CacheWrites(folder)
    shard_dir = folder / "embeddings"
    expected = embedding_fingerprint(corpus, embedder, shard_size)
    stored = read_json(shard_dir / "fingerprint.json")
    if stored is not None and stored != expected:
        warnings.warn(f"embedding cache {shard_dir} was made by another model or corpus version; re-embedding",
                      IndexCacheWarning, stacklevel=3)
        for old in [*shard_dir.glob("shard-*.npy"), *shard_dir.glob("shard-*.json")]:
            writes.remove(old)
    if stored != expected:
        writes(atomic_write_json, shard_dir / "fingerprint.json", expected)
    return expected


def embed_shard(corpus: Corpus, embedder: Embedder, folder: Path, shard: int,
                expected: dict[str, Any], writes: CacheWrites | None = None) -> np.ndarray:
    """The vectors of one shard: read from the cache when valid (its checksum included), else embedded and
    saved atomically with its size and checksum."""
    import numpy as np

    shard_size, dim = expected["shard_size"], expected["dim"]
    items = corpus.items
    start, stop = shard * shard_size, min((shard + 1) * shard_size, len(items))
    path = folder / "embeddings" / f"shard-{shard:05d}.npy"
    vectors = _load_shard(path, stop - start, dim)
    if vectors is not None:
        return vectors
    try:
        vectors = np.asarray(embedder.embed_items(items[start:stop]), dtype=np.float32)
    except ImageLoadError as exc:
        # Say which items, and that finished shards are kept: fix the file, rerun, it resumes here.
        raise ValidationError(
            f"corpus {corpus.name!r}, items {start + 1}-{stop} ({items[start].id} .. {items[stop - 1].id}): "
            f"{exc}; the {shard} finished shard(s) are kept and a rerun resumes here") from exc
    if vectors.shape != (stop - start, dim):
        raise MMEmbedError(f"embedder {embedder.name!r} returned shape {vectors.shape}, "
                           f"expected ({stop - start}, {dim})")
    writes = writes or CacheWrites(folder)
    # the checksum goes last: a shard without one is not trusted (see _load_shard)
    if writes(atomic_save_npy, path, vectors):
        writes(atomic_write_json, _shard_record_path(path), file_record(path))
    return vectors


def embed_corpus(corpus: Corpus, embedder: Embedder, folder: Path, *,
                 progress: ProgressFn | None = None, shard_size: int = SHARD_SIZE,
                 writes: CacheWrites | None = None) -> np.ndarray:
    """All corpus embeddings, computed shard by shard and cached; a rerun resumes at the first missing shard.

    Each shard is saved with its size and checksum and checked against them when it is read back.
    """
    import numpy as np

    writes = writes or CacheWrites(folder)
    expected = prepare_embedding_cache(corpus, embedder, folder, shard_size, writes)
    shards: list[np.ndarray] = []
    report(progress, 0, len(corpus), "embedding corpus")
    for shard, (_, stop) in enumerate(shard_bounds(len(corpus), shard_size)):
        shards.append(embed_shard(corpus, embedder, folder, shard, expected, writes))
        report(progress, stop, len(corpus), "embedding corpus")
    if not shards:
        return np.zeros((0, expected["dim"]), dtype=np.float32)
    return np.concatenate(shards)


def _shard_record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _unit_rows(vectors: np.ndarray) -> bool:
    import numpy as np

    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3))


def _load_shard(path: Path, rows: int, dim: int) -> np.ndarray | None:
    import numpy as np

    if not path.exists():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        warnings.warn(f"embedding shard {path.name} is unreadable ({exc}); re-embedding it",
                      IndexCacheWarning, stacklevel=4)
        return None
    if vectors.shape != (rows, dim) or vectors.dtype != np.float32:
        warnings.warn(f"embedding shard {path.name} has shape {vectors.shape}, expected ({rows}, {dim}); "
                      "re-embedding it", IndexCacheWarning, stacklevel=4)
        return None
    record = read_json(_shard_record_path(path))
    if record is None and _unit_rows(vectors):
        return vectors  # cached before shards had checksums: rows of unit length are all we can check
    problem = checksum_problem(path, record or {})
    if problem is not None:
        warnings.warn(f"embedding shard {path.name} {problem}; re-embedding it", IndexCacheWarning, stacklevel=4)
        return None
    return vectors


def load_or_build_index(corpus: Corpus, embedder: Embedder, cache_dir: Path, *, index_type: str = "flat",
                        progress: ProgressFn | None = None, verify: str = "background",
                        rebuild: bool = False) -> VectorIndex:
    """The index for (corpus, embedder, index_type): loaded from the cache when its fingerprint, structure and
    size match (the checksum is verified per `verify`: "background", "sync" or "size" only), otherwise built
    (embedding only what the shard cache lacks) and saved. `rebuild` skips the cached index (its check failed).
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    index_type = effective_index_type(index_type, len(corpus))
    folder = cache_folder(cache_dir, corpus.name, embedder.name, embedder.fingerprint)
    if index_type == "ivfpq-disk":
        return build_or_open_disk_index(corpus, embedder, folder, progress=progress)
    expected = _fingerprint(embedder, corpus, index_type=index_type)
    loaded = None if rebuild else _load_index(folder, index_type, expected, corpus, verify)
    if loaded is not None:
        report(progress, len(corpus), len(corpus), "loading index")
        return loaded
    writes = CacheWrites(folder)
    vectors = embed_corpus(corpus, embedder, folder, progress=progress, writes=writes)
    report(progress, 0, 1, "building index")
    index = VectorIndex.build(vectors, [item.id for item in corpus], [item.modality for item in corpus],
                              index_type)
    _save_index(folder, index, expected, writes)
    report(progress, 1, 1, "building index")
    return index


def _save_index(folder: Path, index: VectorIndex, fingerprint: dict[str, Any],
                writes: CacheWrites | None = None) -> None:
    import faiss

    writes = writes or CacheWrites(folder)
    index_path = folder / f"index-{index.index_type}.faiss"
    if not writes(atomic_write, index_path, lambda tmp: faiss.write_index(index.faiss_index, str(tmp))):
        return
    # The metadata goes last: an index file without matching metadata (fingerprint, checksum) is never trusted.
    meta = {"fingerprint": fingerprint, "ids": index.ids, "modalities": [int(code) for code in index.modalities],
            "files": {index_path.name: file_record(index_path)}}
    writes(atomic_write_json, folder / f"index-{index.index_type}.json", {**meta, "checksum": metadata_checksum(meta)})


def metadata_checksum(meta: dict[str, Any]) -> str:
    """Checksum of an index's metadata (without its "checksum" key). The ids and modality codes, a million
    of each for a large pool, are hashed as joined text and bytes: re-serialising them as canonical JSON
    cost seconds of start-up at 1M items (benchmarks/bench_cache_check.py)."""
    head = {key: value for key, value in meta.items() if key not in {"ids", "modalities"}}
    try:
        ids = "\x00".join(meta.get("ids") or []).encode()
        codes = bytes(meta.get("modalities") or [])  # modality codes are small non-negative ints
    except (TypeError, ValueError):
        return ""  # not what _save_index writes: never equal to a stored checksum
    return "-".join((json_checksum(head), bytes_checksum(ids), bytes_checksum(codes)))


def _load_index(folder: Path, index_type: str, expected: dict[str, Any], corpus: Corpus,
                verify: str = "background") -> VectorIndex | None:
    import faiss
    import numpy as np

    meta_path, index_path = folder / f"index-{index_type}.json", folder / f"index-{index_type}.faiss"
    if not meta_path.exists() and not index_path.exists():
        return None

    def stale(why: str) -> None:
        warnings.warn(f"cached index {index_path} {why}; rebuilding", IndexCacheWarning, stacklevel=4)

    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("fingerprint") != expected:
        stale("is unreadable" if not isinstance(meta, dict) else "was built for another model or corpus version")
        return None
    body = {key: value for key, value in meta.items() if key != "checksum"}
    if meta.get("checksum") != metadata_checksum(body):
        stale("has metadata that does not match its checksum (damaged, or written before checksums)")
        return None
    record = (meta.get("files") or {}).get(index_path.name)
    if (problem := size_problem(index_path, record)) is not None:  # instant: catches truncation and swaps
        stale(f"is corrupt ({problem})")
        return None
    try:
        faiss_index = faiss.read_index(str(index_path))
    except Exception as exc:  # faiss raises RuntimeError for truncated or foreign files
        stale(f"is corrupt ({str(exc).splitlines()[0][:120]})")
        return None
    if (problem := _structure_problem(faiss_index, index_type, expected)) is not None:
        stale(problem)
        return None
    ids = meta.get("ids")
    if ids != [item.id for item in corpus] or len(meta.get("modalities") or ()) != len(corpus):
        stale("does not match the corpus rows")
        return None
    check = None
    if verify == "sync" and (problem := checksum_problem(index_path, record)) is not None:
        stale(f"is corrupt ({problem})")
        return None
    if verify == "background":
        check = BackgroundCheck(index_path, record)
    return VectorIndex(faiss_index, ids, np.array(meta["modalities"], dtype=np.int8), index_type, check=check)


def _structure_problem(faiss_index: Any, index_type: str, expected: dict[str, Any]) -> str | None:
    """Why a readable FAISS index is not the one its fingerprint describes (dimension, count, metric, type)."""
    import faiss

    if faiss_index.d != expected["dim"]:
        return f"has dimension {faiss_index.d}, but the embedder gives {expected['dim']}"
    if faiss_index.ntotal != expected["count"]:
        return f"holds {faiss_index.ntotal} vectors, but the corpus has {expected['count']} items"
    if faiss_index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return "does not use the inner-product metric"
    kind = type(faiss.downcast_index(faiss_index)).__name__
    if kind not in _FAISS_CLASSES[index_type]:
        return f"is a {kind}, not a {index_type} index"
    return None


def build_or_open_disk_index(corpus: Corpus, embedder: Embedder, folder: Path, *,
                             progress: ProgressFn | None = None) -> Any:
    """The on-disk IVF-PQ index of the corpus (mmembed.disk_index), built from the embedding shard cache
    without ever holding all vectors in memory: shards are embedded (or found cached) one at a time, then
    read back a group at a time for training and encoding."""
    import numpy as np

    from mmembed.disk_index import build_disk_index

    expected = prepare_embedding_cache(corpus, embedder, folder)
    bounds = shard_bounds(len(corpus))
    report(progress, 0, len(corpus), "embedding corpus")
    for shard, (_, stop) in enumerate(bounds):
        embed_shard(corpus, embedder, folder, shard, expected)  # cached: later reads are from disk
        report(progress, stop, len(corpus), "embedding corpus")

    def read_group(group: int) -> np.ndarray:
        first = group * DISK_SHARD_FACTOR
        return np.concatenate([embed_shard(corpus, embedder, folder, shard, expected)
                               for shard in range(first, min(first + DISK_SHARD_FACTOR, len(bounds)))])

    codes = np.array([_MODALITY_CODES[item.modality] for item in corpus], dtype=np.int8)
    disk = build_disk_index(folder / "index-ivfpq-disk", count=len(corpus), dim=expected["dim"],
                            shard_size=SHARD_SIZE * DISK_SHARD_FACTOR, read_shard=read_group, modalities=codes,
                            fingerprint=_fingerprint(embedder, corpus, index_type="ivfpq-disk"), progress=progress)
    disk.ids = [item.id for item in corpus]
    return disk
