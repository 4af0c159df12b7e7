"""Load and validate corpora: M-BEIR candidate-pool jsonl, Hugging Face datasets, and query files.

Validation collects EVERY problem (with its line or row) before raising one CorpusValidationError, so
a user fixing a corpus sees all that is wrong at once, and one bad row never silently drops a corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmembed.types import Item, Modality, Query, ValidationError

MBEIR_ITEM_KEYS = {"did", "txt", "img_path", "modality"}
MBEIR_QUERY_KEYS = {"qid", "query_txt", "query_img_path", "query_modality", "pos_cand_list"}


class CorpusValidationError(ValidationError):
    """A corpus or query file with problems; `problems` lists each one with its line or row."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {len(problems)} problem(s):\n  {shown}{more}")


@dataclass(frozen=True)
class Corpus:
    """An ordered, validated collection of items with a content hash for cache fingerprints."""

    items: tuple[Item, ...]
    name: str
    root: Path | None = None
    content_hash: str = ""
    _by_id: dict[str, Item] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {item.id: item for item in self.items})
        if len(self._by_id) != len(self.items):
            dupes = [i for i, n in Counter(item.id for item in self.items).items() if n > 1]
            raise CorpusValidationError(self.name, [f"duplicate id {i!r}" for i in dupes])
        if not self.content_hash:
            object.__setattr__(self, "content_hash", content_hash(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __getitem__(self, item_id: str) -> Item:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise KeyError(f"no item {item_id!r} in corpus {self.name!r}") from None

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    def modality_counts(self) -> dict[Modality, int]:
        counts = Counter(item.modality for item in self.items)
        return {modality: counts.get(modality, 0) for modality in Modality}


def content_hash(items: Sequence[Item]) -> str:
    """sha256 over ids, texts, modalities and image bytes: any change to the corpus changes it."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.id}\x00{item.text or ''}\x00{item.modality.value}\x00".encode())
        if isinstance(item.image, (str, Path)):
            digest.update(_file_digest(Path(item.image)))
        elif item.image is not None:
            digest.update(hashlib.sha256(item.image.tobytes()).digest())
    return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return b"<missing>"


def _check_image(path: Path) -> str | None:
    """None if `path` opens as an image, else why not (cheap: header check, no full decode).

    Applies the same size limits as mmembed.images.load_image, so an image that would be refused when
    the index is built is reported now, with its line, instead of aborting the build half-way.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    from mmembed.images import MAX_FILE_BYTES, MAX_PIXELS

    if not path.is_file():
        return f"image file not found: {path}"
    size = path.stat().st_size
    if size == 0:
        return f"image file is empty: {path}"
    if size > MAX_FILE_BYTES:
        return f"image {path.name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            with Image.open(path) as image:
                width, height = image.size
                image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image {path.name}: {exc}"
    if width * height > MAX_PIXELS:
        return f"image {path.name} is {width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels"
    return None


def iter_jsonl_objects(path: Path, problems: list[str], what: str = "corpus") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON-object line of `path`; bad lines are added to `problems`, not raised,
    so that a caller can report every problem of the file at once."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    with path.open("rb") as handle:  # bytes: a bad byte is one line's problem, not a traceback for the file
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"line {line_no}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                f"{exc.start + 1}); save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {line_no}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {line_no}: expected a JSON object, got {type(row).__name__}")
                continue
            yield line_no, row


def _text_field(row: dict[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where}: {key} must be a string or null, got {type(value).__name__}")
        return None
    return value if value.strip() else None


def load_mbeir_jsonl(path: str | Path, *, check_images: bool = True, image_root: str | Path | None = None) -> Corpus:
    """Load an M-BEIR candidate pool: one object per line with did, txt, img_path, modality.

    `img_path` is relative to the jsonl file (absolute paths also work), or to `image_root` when given:
    the released M-BEIR keeps its pools in M-BEIR/cand_pool/ and paths relative to M-BEIR/ itself.
    Keys beyond M-BEIR's go to `Item.meta` (e.g. topic, source, license, credit for the detail view).
    """
    path = Path(path).expanduser().resolve()
    base = Path(image_root).expanduser().resolve() if image_root is not None else path.parent
    problems: list[str] = []
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for line_no, row in iter_jsonl_objects(path, problems):
        where = f"line {line_no}"
        did = row.get("did")
        if not isinstance(did, (str, int)) or not str(did).strip():
            problems.append(f"{where}: missing or empty 'did'")
            continue
        did = str(did)
        where = f"line {line_no} (did {did!r})"
        if did in first_line:
            problems.append(f"{where}: duplicate id, first seen on line {first_line[did]}")
            continue
        first_line[did] = line_no
        if "txt" in row and isinstance(row["txt"], str) and not row["txt"].strip() and not row.get("img_path"):
            problems.append(f"{where}: empty text and no image")
            continue
        text = _text_field(row, "txt", where, problems)
        image: Path | None = None
        if row.get("img_path"):
            if image_root is not None:
                why = _outside(base, str(row["img_path"]), "the --image-root folder")
            else:
                why = _outside(base, str(row["img_path"]), "the corpus folder")
                why = why and f"{why}, or pass --image-root with a folder that holds them"
            if why:
                problems.append(f"{where}: {why}")
                continue
            image = (base / str(row["img_path"])).resolve()
            if check_images and (why := _check_image(image)):
                problems.append(f"{where}: {why}")
                continue
        declared = row.get("modality")
        try:
            modality = Modality.parse(declared) if declared is not None else None
            meta = {k: v for k, v in row.items() if k not in MBEIR_ITEM_KEYS}
            items.append(Item(did, text=text, image=image, modality=modality, meta=meta))
        except ValidationError as exc:
            problems.append(f"{where}: {_strip_prefix(str(exc))}")
    if problems:
        raise CorpusValidationError(str(path), problems)
    if not items:
        raise CorpusValidationError(str(path), ["the file holds no items"])
    return Corpus(tuple(items), name=path.stem, root=path.parent)


def _outside(base: Path, relative: str, folder: str) -> str | None:
    """Why image path `relative` leads out of `base` (named `folder` in the message), or None. Checked as
    written (`..`, an absolute path elsewhere), not where symlinks lead: links inside are the operator's."""
    target = Path(os.path.normpath(base / relative))
    if target == base or base in target.parents:
        return None
    return f"image path {relative!r} leads outside {folder} {base}; keep the images inside it"


def _strip_prefix(message: str) -> str:
    """'item 'x': needs text...' -> 'needs text...' (the caller already says which row)."""
    return message.split(": ", 1)[1] if message.startswith(("item ", "query")) and ": " in message else message


def _open_dataset(name_or_path: str | Path, split: str) -> Any:
    """The `split` of a `save_to_disk` folder, an imagefolder or a hub dataset; a clear error otherwise."""
    import datasets

    location = Path(name_or_path).expanduser()
    try:
        if location.is_dir() and any((location / name).exists() for name in ("state.json", "dataset_dict.json")):
            dataset = datasets.load_from_disk(str(location))  # written by Dataset(Dict).save_to_disk
        elif location.is_dir():
            dataset = datasets.load_dataset("imagefolder", data_dir=str(location))
        else:
            dataset = datasets.load_dataset(str(name_or_path))
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
        hint = " (offline? download it once with network, then save_to_disk)" if not location.exists() else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(f"dataset {name_or_path}: cannot load it{hint}: {first}") from exc
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValidationError(f"dataset {name_or_path}: no split {split!r}; has {', '.join(dataset)}")
        dataset = dataset[split]
    return dataset


def load_hf_dataset(
    name_or_path: str | Path,
    *,
    image_column: str | None = "image",
    text_column: str | None = "text",
    id_column: str | None = None,
    split: str = "train",
) -> Corpus:
    """A Hugging Face dataset (a `save_to_disk` folder, an imagefolder, or a hub name) as a Corpus.

    Images stay PIL images in memory; rows whose text and image are both empty are reported, not dropped.
    """
    location = Path(name_or_path).expanduser()
    dataset = _open_dataset(name_or_path, split)
    columns = set(dataset.column_names)
    for role, column in (("image", image_column), ("text", text_column), ("id", id_column)):
        if column is not None and column not in columns:
            raise ValidationError(
                f"dataset {name_or_path}: no {role} column {column!r}; columns are: {', '.join(sorted(columns))}"
            )
    problems: list[str] = []
    items: list[Item] = []
    seen: dict[str, int] = {}
    for row_no, row in enumerate(dataset):
        item_id = str(row[id_column]) if id_column else str(row_no)
        where = f"row {row_no} (id {item_id!r})"
        if item_id in seen:
            problems.append(f"{where}: duplicate id, first seen in row {seen[item_id]}")
            continue
        seen[item_id] = row_no
        text = row.get(text_column) if text_column else None
        image = row.get(image_column) if image_column else None
        if text is not None and not isinstance(text, str):
            problems.append(f"{where}: text column {text_column!r} holds {type(text).__name__}, not a string")
            continue
        if isinstance(image, dict):  # an Image feature with decode=False: {"path", "bytes"}
            image = image.get("path")
        if isinstance(image, str):  # a column of file paths, relative to the dataset folder
            if location.is_dir() and (why := _outside(location.resolve(), image, "the dataset folder")):
                problems.append(f"{where}: {why}")
                continue
            image = (location / image).resolve() if location.is_dir() else Path(image).resolve()
            if why := _check_image(image):
                problems.append(f"{where}: {why}")
                continue
        meta = {k: v for k, v in row.items() if k not in {image_column, text_column, id_column}
                and isinstance(v, (str, int, float, bool))}
        try:
            items.append(Item(item_id, text=text, image=image, meta=meta))
        except ValidationError as exc:
            problems.append(f"{where}: {_strip_prefix(str(exc))}")
    if problems:
        raise CorpusValidationError(str(name_or_path), problems)
    if not items:
        raise CorpusValidationError(str(name_or_path), [f"split {split!r} holds no rows"])
    name = location.name if location.exists() else str(name_or_path).replace("/", "__")
    return Corpus(tuple(items), name=name, root=location if location.is_dir() else None)


_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".tsv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def load_folder(path: str | Path, *, check_images: bool = True) -> Corpus:
    """A plain folder as a corpus: each image is an item, captioned by a .txt file of the same stem if
    there is one (image+text); a .txt file without an image is a text item. Ids are the relative paths
    without suffix (``animals/cat``), so they stay stable when files are added."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))
    by_stem: dict[Path, dict[str, Path]] = {}
    for file in files:
        suffix = file.suffix.lower()
        kind = "image" if suffix in IMAGE_SUFFIXES else "text" if suffix == ".txt" else None
        if kind is None:
            continue
        stem = file.relative_to(root).with_suffix("")
        slot = by_stem.setdefault(stem, {})
        if kind in slot:
            slot.setdefault("clash", slot[kind])  # cat.jpg and cat.png: which one is "cat"?
        slot[kind] = file
    problems: list[str] = []
    items: list[Item] = []
    for stem, found in by_stem.items():
        item_id = stem.as_posix()
        where = f"{item_id}"
        if "clash" in found:
            problems.append(f"{where}: two images share this name ({found['clash'].name}, {found['image'].name})")
            continue
        text = None
        if "text" in found:
            try:
                text = found["text"].read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{found['text'].relative_to(root)}: cannot read text ({exc})")
                continue
            if text is None and "image" not in found:
                problems.append(f"{found['text'].relative_to(root)}: empty text and no image")
                continue
        image = found.get("image")
        if image is not None and check_images and (why := _check_image(image)):
            problems.append(f"{image.relative_to(root)}: {why}")
            continue
        items.append(Item(item_id, text=text, image=image, meta={"source": str(image or found["text"])}))
    if problems:
        raise CorpusValidationError(str(root), problems)
    if not items:
        raise CorpusValidationError(str(root), ["the folder holds no images (" + ", ".join(IMAGE_SUFFIXES)
                                                + ") or .txt files"])
    return Corpus(tuple(items), name=root.name, root=root)


def load_corpus(path_or_name: str | Path, **options: Any) -> Corpus:
    """Dispatch on what `path_or_name` is: a .jsonl file (or a folder holding corpus.jsonl) -> M-BEIR;
    a `save_to_disk` dataset or an imagefolder with metadata -> datasets; another folder -> images and
    .txt captions; anything else -> a Hugging Face hub dataset name."""
    path = Path(path_or_name).expanduser()
    if path.suffix == ".jsonl":
        return load_mbeir_jsonl(path, **options)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return load_mbeir_jsonl(path / "corpus.jsonl", **options)
        hf_markers = ("state.json", "dataset_dict.json", "metadata.csv", "metadata.jsonl")
        if not any((path / marker).exists() for marker in hf_markers):
            return load_folder(path, **options)
    elif path.is_absolute() or str(path_or_name).startswith((".", "~")) or path.suffix in _FILE_SUFFIXES:
        # Looks like a local path, not an "owner/name" hub id: say so instead of asking the hub.
        raise FileNotFoundError(f"corpus not found: {path}")
    return load_hf_dataset(path_or_name, **options)


TASK_NAMES = ("t->i", "t->t", "t->(i,t)", "i->t", "i->i", "(i,t)->i", "(i,t)->t", "(i,t)->(i,t)")
_SHORT = {Modality.TEXT: "t", Modality.IMAGE: "i", Modality.IMAGE_TEXT: "(i,t)"}


def task_name(query_modality: Modality, target: Modality) -> str:
    """M-BEIR-style task label, e.g. (text, image) -> 't->i'."""
    return f"{_SHORT[query_modality]}->{_SHORT[target]}"


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query: the query (with its target), its positive candidate ids, its task label."""

    qid: str
    query: Query
    positives: tuple[str, ...]
    task: str


def load_queries(path: str | Path, corpus: Corpus | None = None, *,
                 image_root: str | Path | None = None) -> list[EvalQuery]:
    """Load M-BEIR-format queries (qid, query_txt, query_img_path, query_modality, pos_cand_list,
    plus task and target_modality). With `corpus`, positives must exist in it."""
    path = Path(path).expanduser().resolve()
    base = Path(image_root).expanduser().resolve() if image_root is not None else path.parent
    problems: list[str] = []
    queries: list[EvalQuery] = []
    for line_no, row in iter_jsonl_objects(path, problems):
        qid = str(row.get("qid", "")).strip()
        where = f"line {line_no} (qid {qid!r})" if qid else f"line {line_no}"
        if not qid:
            problems.append(f"{where}: missing 'qid'")
            continue
        text = _text_field(row, "query_txt", where, problems)
        image = (base / str(row["query_img_path"])).resolve() if row.get("query_img_path") else None
        if image is not None and (why := _check_image(image)):
            problems.append(f"{where}: {why}")
            continue
        positives = row.get("pos_cand_list")
        if not isinstance(positives, list) or not positives:
            problems.append(f"{where}: pos_cand_list must be a non-empty list")
            continue
        positives = tuple(str(p) for p in positives)
        if corpus is not None and (missing := [p for p in positives if p not in corpus]):
            problems.append(f"{where}: positives not in the corpus: {', '.join(missing)}")
            continue
        try:
            target = Modality.parse(row["target_modality"]) if row.get("target_modality") else None
            if target is None and corpus is not None:
                target = corpus[positives[0]].modality
            query = Query(text=text, image=image, target=target)
            declared = row.get("query_modality")
            if declared is not None and Modality.parse(declared) is not query.modality:
                problems.append(f"{where}: query_modality {declared!r} does not match the fields present")
                continue
        except ValidationError as exc:
            problems.append(f"{where}: {_strip_prefix(str(exc))}")
            continue
        task = str(row.get("task") or (task_name(query.modality, target) if target else "any"))
        queries.append(EvalQuery(qid, query, positives, task))
    if problems:
        raise CorpusValidationError(str(path), problems)
    return queries
