"""Build mmembed-mini's M-BEIR-style training set from redistributable sources installed by apt.

Sources (Debian packages, no network beyond the package registry):
  * openclipart-svg  (public domain clip art; title, description and keywords in each SVG's metadata),
    rasterised with rsvg-convert (apt: librsvg2-bin) onto white, padded to a square;
  * wordnet-base     (WordNet 3.0 noun glosses as text passages; WordNet licence, redistributable);
  * npm emoji-datasource-twitter (Twemoji 64 px PNGs, CC-BY 4.0, with names and short names; optional:
    `npm install emoji-datasource-twitter` into build/npm, or pass --twemoji DIR).

Output (outside git, reproducible): DIR/pool.jsonl (candidate pool: did, txt, img_path, modality, source),
DIR/queries.jsonl (qid, query_txt, query_img_path, query_modality, pos_cand_list, task, target_modality,
split, source), DIR/images/*.png, DIR/sources.txt (every source key used), DIR/image_hashes.txt and
DIR/manifest.json (counts, exclusions, fingerprint).

Nothing of the evaluation corpus may leak into training: every source key listed in
sample_corpus/sources.txt (and in sample_corpus/corpus.jsonl's `source` fields) is excluded, as is any
clip art whose SVG bytes equal an excluded one's (the package ships duplicates under other paths), any
image whose pixels hash equal a sample_corpus image's, and any text equal to a sample_corpus item or query.

    .venv/bin/python scripts/build_training_set.py --out build/training_set
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmembed.instructions import INSTRUCTIONS  # noqa: E402
from mmembed.storage import atomic_write_text  # noqa: E402
from mmembed.types import Modality  # noqa: E402

CLIPART_DIR = Path("/usr/share/openclipart/svg")
WORDNET_DIR = Path("/usr/share/wordnet")
IMAGE_SIZE = 64  # the size image hashes are taken at (tests/test_train_disjoint.py compares at 64 px)
RENDER_SIZE = 128  # the size images are stored at: image towers read up to this resolution
FORMAT_VERSION = 2

_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<dc:title>([^<]*)</dc:title>")
_DESC = re.compile(r"<dc:description>([^<]*)</dc:description>")
_SUBJECT = re.compile(r"<dc:subject>(.*?)</dc:subject>", re.S)
_LI = re.compile(r"<rdf:li>([^<]*)</rdf:li>")
_JUNK_TITLE = re.compile(r"\d{4}|collection|theme|untitled|\.svg|^[\W\d_]+$", re.I)
_GENERIC_TITLES = {"", "open clip art library", "untitled", "clipart", "clip art", "image", "drawing", "svg"}
# keywords too broad to name what a drawing shows (a concept is looked up in the others first)
_GENERIC_WORDS = {"symbol", "symbols", "icon", "icons", "shape", "shapes", "people", "unsorted", "clip art", "clipart",
                  "signs and symbols", "sign", "art", "image", "picture", "drawing", "cartoon", "color", "colour",
                  "black and white", "line art", "media", "public domain", "svg", "remix", "design", "simple",
                  "red", "blue", "green", "black", "white", "yellow", "object", "thing", "illustration"}
MAX_PER_TITLE = 4
MAX_PER_CONCEPT = 60  # images per concept kept as positives of one query (the rest stay in the pool)
TEXT_TO_IMAGE = ("{}", "a picture of {}", "an image of {}", "a drawing of {}", "{} clip art", "a photo of {}",
                 "show me {}", "an illustration of {}", "{}, pictured")


@dataclass
class Clipart:
    key: str  # "openclipart:<path relative to the svg dir>"
    path: Path
    title: str
    description: str
    keywords: list[str]
    category: str
    png: Path | None = None
    pixel_hash: str = ""
    extras: dict = field(default_factory=dict)


def norm_text(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def pixel_hash(image) -> str:
    """sha256 of the RGB pixels after the same square 64 px preparation training uses."""
    from mmembed.models.mini_images import prepare_image

    return hashlib.sha256(prepare_image(image, IMAGE_SIZE).tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------- exclusion
@dataclass
class Exclusion:
    keys: set[str] = field(default_factory=set)
    svg_hashes: set[str] = field(default_factory=set)
    pixel_hashes: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    # --exclude-concepts: the sample corpus's whole concept table (a superset of the items it picks)
    title_patterns: list[re.Pattern] = field(default_factory=list)
    emoji_names: set[str] = field(default_factory=set)
    wordnet_senses: set[str] = field(default_factory=set)  # "<lemma>.<sense number>"

    def add_concepts(self, path: Path) -> None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("sample_corpus_concepts", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        for concept in module.CONCEPTS:
            if concept.clipart:
                self.title_patterns.append(re.compile(concept.clipart, re.I))
            self.emoji_names |= {name.lower() for name in concept.emoji}
            self.wordnet_senses.add(concept.wordnet.lower())
            self.texts.add(norm_text(concept.name))
        self.keys |= {photo.key for photo in getattr(module, "PHOTOS", ())}

    def blocks_title(self, title: str) -> bool:
        return norm_text(title) in self.texts or any(p.search(title) for p in self.title_patterns)

    def blocks_gloss(self, gloss: str) -> bool:
        """A gloss whose definition appears inside any sample text (they may prefix it with the word)."""
        definition = norm_text(gloss.split(";")[0])
        return bool(definition) and (definition in self.texts or any(definition in t for t in self.texts
                                                                      if len(t) >= len(definition)))

    @classmethod
    def from_sample_corpus(cls, folder: Path) -> Exclusion:
        """Everything of the evaluation corpus: its source keys, image pixels and texts (items and queries)."""
        from PIL import Image

        ex = cls()
        sources = folder / "sources.txt"
        if sources.is_file():
            ex.keys |= {line.strip() for line in sources.read_text().splitlines() if line.strip()}
        for name in ("corpus.jsonl", "queries.jsonl"):
            path = folder / name
            if not path.is_file():
                continue
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                if row.get("source"):
                    ex.keys.add(str(row["source"]))
                for text_key in ("txt", "query_txt"):
                    if row.get(text_key):
                        ex.texts.add(norm_text(row[text_key]))
                for img_key in ("img_path", "query_img_path"):
                    if row.get(img_key):
                        image_path = (folder / row[img_key]).resolve()
                        if image_path.is_file():
                            with Image.open(image_path) as image:
                                ex.pixel_hashes.add(pixel_hash(image))
        for key in ex.keys:  # the same drawing ships under several paths: exclude by content too
            if key.startswith("openclipart:"):
                svg = CLIPART_DIR / key.split(":", 1)[1]
                if svg.is_file():
                    ex.svg_hashes.add(hashlib.sha256(svg.read_bytes()).hexdigest())
        ex.texts.discard("")
        return ex


# ---------------------------------------------------------------------------------------------- clip art
def read_clipart(path: Path) -> Clipart | None:
    head = path.read_text(errors="ignore")[:60000]
    titles = [t.strip() for t in _TITLE.findall(head)]
    title = next((t for t in titles if t.lower() not in _GENERIC_TITLES), "")
    if not title or len(title) > 60 or _JUNK_TITLE.search(title):
        return None
    desc_match = _DESC.search(head)
    description = (desc_match.group(1).strip() if desc_match else "")[:300]
    subject = _SUBJECT.search(head)
    keywords = []
    if subject:
        for word in _LI.findall(subject.group(1)):
            word = word.strip().replace("_", " ")
            if word and word.lower() not in {k.lower() for k in keywords} and len(word) < 30:
                keywords.append(word)
    rel = path.relative_to(CLIPART_DIR).as_posix()
    category = " ".join(rel.split("/")[:-1]).replace("_", " ")
    title = _TAG.sub("", title)
    return Clipart(f"openclipart:{rel}", path, title, description, keywords[:8], category)


def render(svg: Path, out_png: Path, cache: Path | None = None) -> bool:
    """Rasterise onto white with rsvg-convert, then pad to a square RENDER_SIZE PNG. Renderings are kept in
    `cache` by SVG content, so rebuilding the set (new exclusions) does not rasterise everything again."""
    from PIL import Image

    from mmembed.models.mini_images import prepare_image

    cached = cache / f"{hashlib.sha256(svg.read_bytes()).hexdigest()[:32]}.png" if cache is not None else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, out_png)
        return True
    if cached is not None and cached.with_suffix(".failed").is_file():
        return False
    try:
        done = subprocess.run(
            ["rsvg-convert", "-w", str(RENDER_SIZE * 2), "-h", str(RENDER_SIZE * 2), "-a", "-b", "white", str(svg)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    square = None
    if done.returncode == 0 and done.stdout:
        try:
            with Image.open(io.BytesIO(done.stdout)) as image:
                square = prepare_image(image, RENDER_SIZE)
        except Exception:  # a broken SVG is skipped, not fatal
            square = None
    if square is None or square.getextrema() in (((255, 255), (255, 255), (255, 255)), ((0, 0), (0, 0), (0, 0))):
        if cached is not None:  # blank or broken rendering: nothing to learn from; remember not to retry
            cached.with_suffix(".failed").touch()
        return False
    square.save(out_png, format="PNG", optimize=True)
    if cached is not None:
        shutil.copyfile(out_png, cached)
    return True


# ----------------------------------------------------------------------------------------------- wordnet
def read_wordnet_nouns() -> tuple[dict[str, dict], dict[str, str]]:
    """synset offset -> {key, lemmas, gloss}; lemma -> offset of its first (most frequent) sense."""
    first_sense: dict[str, str] = {}
    sense_no: dict[tuple[str, str], int] = {}
    senses_of: dict[str, list[tuple[str, int]]] = {}
    for line in (WORDNET_DIR / "index.noun").read_text(errors="ignore").splitlines():
        if line.startswith(" "):
            continue
        parts = line.split()
        lemma, synset_cnt, p_cnt = parts[0], int(parts[2]), int(parts[3])
        offsets = parts[4 + p_cnt + 2 :][:synset_cnt]
        if offsets:
            first_sense[lemma] = offsets[0]
        for number, offset in enumerate(offsets, 1):
            sense_no[(lemma, offset)] = number
            senses_of.setdefault(offset, []).append((lemma.lower(), number))
    synsets: dict[str, dict] = {}
    for line in (WORDNET_DIR / "data.noun").read_text(errors="ignore").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        data, gloss = line.split("|", 1)
        parts = data.split()
        offset, w_cnt = parts[0], int(parts[3], 16)
        lemmas = [parts[4 + 2 * i] for i in range(w_cnt)]
        head = lemmas[0].lower()
        number = sense_no.get((head, offset), 1)
        synsets[offset] = {
            "key": f"wordnet:{head}.n.{number:02d}",
            # other spellings of the same synset a corpus builder might have used, all excluded alike
            "alt_keys": {f"wordnet:{offset}-n", f"wordnet:n{offset}", f"wordnet:{offset}"}
            | {f"wordnet:{lemma}.{n}" for lemma, n in senses_of.get(offset, [])}
            | {f"wordnet:{lemma}.n.{n:02d}" for lemma, n in senses_of.get(offset, [])},
            "senses": {f"{lemma}.{n}" for lemma, n in senses_of.get(offset, [])},
            "lemmas": [lemma.replace("_", " ") for lemma in lemmas],
            "gloss": gloss.strip(),
        }
    return synsets, first_sense


# ------------------------------------------------------------------------------------------------- build
def instruction(query_mod: Modality, target: Modality) -> str:
    return INSTRUCTIONS[(query_mod, target)]


def atomic_write(path: Path, text: str) -> None:
    """The project's one atomic writer (the temp file is removed if the write fails)."""
    atomic_write_text(path, text)


def read_twemoji(folder: Path, exclusion: Exclusion, stats: dict[str, int]) -> list[Clipart]:
    """Twemoji entries as clip-art-like records (image, name, short names, category)."""
    entries = []
    for entry in json.loads((folder / "emoji.json").read_text()):
        image = folder / "img" / "twitter" / "64" / entry.get("image", "")
        if not entry.get("has_img_twitter") or not image.is_file() or not entry.get("name"):
            continue
        code = Path(entry["image"]).stem.lower()
        keys = {f"twemoji:{code}", f"twemoji:{entry['unified'].lower()}", f"twemoji:{entry['unified']}"}
        if keys & exclusion.keys:
            stats["excluded_key"] += 1
            continue
        name = entry["name"].lower().replace("-", " ")
        if norm_text(name) in exclusion.texts or name in exclusion.emoji_names or exclusion.blocks_title(name):
            stats["excluded_text"] += 1
            continue
        words = [w.replace("_", " ") for w in entry.get("short_names", []) if w.replace("_", " ") != name]
        category = f"{entry.get('category', '')} {entry.get('subcategory', '')}".replace("-", " ").strip().lower()
        entries.append(Clipart(f"twemoji:{code}", image, name, "", [*words[:3], *category.split()[:2]], category))
    return entries


def build(out: Path, sample_corpus: Path, max_clipart: int, n_wordnet: int, seed: int, workers: int,
          twemoji: Path | None = None, max_twemoji: int = 1500, concepts: Path | None = None) -> dict:
    from PIL import Image

    rng = random.Random(seed)
    exclusion = Exclusion.from_sample_corpus(sample_corpus)
    if concepts is not None:
        exclusion.add_concepts(concepts)
    print(f"excluding {len(exclusion.keys)} sample_corpus source keys, {len(exclusion.svg_hashes)} SVG contents, "
          f"{len(exclusion.pixel_hashes)} image hashes, {len(exclusion.texts)} texts", file=sys.stderr)
    stats: dict[str, int] = {"excluded_key": 0, "excluded_svg_bytes": 0, "excluded_pixels": 0, "excluded_text": 0,
                             "duplicate_svg": 0, "no_metadata": 0, "render_failed": 0}

    # 1. clip art: metadata, exclusion, de-duplication
    seen_svg: set[str] = set()
    cliparts: list[Clipart] = []
    for path in sorted(CLIPART_DIR.rglob("*.svg")):
        key = f"openclipart:{path.relative_to(CLIPART_DIR).as_posix()}"
        if key in exclusion.keys:
            stats["excluded_key"] += 1
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in exclusion.svg_hashes:
            stats["excluded_svg_bytes"] += 1
            continue
        if digest in seen_svg:
            stats["duplicate_svg"] += 1
            continue
        seen_svg.add(digest)
        clip = read_clipart(path)
        if clip is None:
            stats["no_metadata"] += 1
            continue
        if exclusion.blocks_title(clip.title):
            stats["excluded_text"] += 1
            continue
        cliparts.append(clip)
    rng.shuffle(cliparts)
    per_title: dict[str, int] = {}
    capped = []
    for clip in cliparts:  # the package repeats some drawings (a star set, flowchart pieces) dozens of times
        title = norm_text(clip.title)
        per_title[title] = per_title.get(title, 0) + 1
        if per_title[title] <= MAX_PER_TITLE:
            capped.append(clip)
    stats["capped_title"] = len(cliparts) - len(capped)
    cliparts = capped[: max_clipart * 11 // 10]  # a margin for renderings that fail

    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    render_cache = out.parent / f"{out.name}_render_cache"
    render_cache.mkdir(exist_ok=True)
    names = [f"oc{i:05d}" for i in range(len(cliparts))]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = [(clip.path, out / "images" / f"{name}.png") for clip, name in zip(cliparts, names, strict=True)]
        ok = list(pool.map(lambda job: render(*job, cache=render_cache), jobs))
    kept: list[Clipart] = []
    for clip, name, good in zip(cliparts, names, ok, strict=False):
        if not good:
            stats["render_failed"] += 1
            continue
        clip.png = out / "images" / f"{name}.png"
        with Image.open(clip.png) as image:
            clip.pixel_hash = pixel_hash(image)
        if clip.pixel_hash in exclusion.pixel_hashes:
            stats["excluded_pixels"] += 1
            clip.png.unlink()
            continue
        kept.append(clip)
        if len(kept) >= max_clipart:
            break
    for clip in cliparts:  # drop renderings beyond the cap
        if clip.png is not None and clip not in kept and clip.png.exists():
            clip.png.unlink()
    n_clipart = len(kept)
    if twemoji is not None:
        emoji = read_twemoji(twemoji, exclusion, stats)
        rng.shuffle(emoji)
        for i, entry in enumerate(emoji[:max_twemoji]):
            with Image.open(entry.path) as image:
                from mmembed.models.mini_images import prepare_image

                square = prepare_image(image, RENDER_SIZE)
            entry.png = out / "images" / f"em{i:05d}.png"
            square.save(entry.png, format="PNG", optimize=True)
            entry.pixel_hash = pixel_hash(square)
            if entry.pixel_hash in exclusion.pixel_hashes:
                stats["excluded_pixels"] += 1
                entry.png.unlink()
                continue
            kept.append(entry)

    # 2. WordNet: glosses of the words the clip art is about (topical distractors for text queries asking
    #    for images, and the answers of image+question queries), plus random other nouns for text->text
    synsets, first_sense = read_wordnet_nouns()

    def usable(offset: str) -> bool:
        syn = synsets[offset]
        return (syn["key"] not in exclusion.keys and not (syn["alt_keys"] & exclusion.keys)
                and not (syn["senses"] & exclusion.wordnet_senses) and not exclusion.blocks_gloss(syn["gloss"]))

    def lookup(word: str) -> str | None:
        lemma = word.lower().strip().replace(" ", "_").replace("-", "_")
        forms = [lemma]
        if lemma.endswith("ies"):
            forms.append(lemma[:-3] + "y")
        if lemma.endswith("es"):
            forms.append(lemma[:-2])
        if lemma.endswith("s"):
            forms.append(lemma[:-1])
        for form in forms:
            offset = first_sense.get(form)
            if offset and usable(offset):
                return offset
        return None

    def concept_of(clip: Clipart) -> str | None:
        """The WordNet noun a drawing shows: its whole title, then its specific keywords, then the title's
        last word (the head noun of "red apple"), then its folder. Generic tags ("symbol") come last."""
        words = norm_text(clip.title).split()
        specific = [k for k in clip.keywords if k.lower() not in _GENERIC_WORDS]
        folder = clip.category.split()[-1:] if clip.category else []
        for word in [clip.title, *specific, *words[-1:], *folder]:
            if word and word.lower() not in _GENERIC_WORDS:
                offset = lookup(word)
                if offset:
                    return offset
        return None

    topical: dict[str, str] = {}  # clip key -> synset offset of the concept it shows
    chosen: list[str] = []
    for clip in kept:
        offset = concept_of(clip)
        if offset:
            topical[clip.key] = offset
            if offset not in chosen:
                chosen.append(offset)
    others = [o for o in synsets if o not in set(chosen) and usable(o) and len(synsets[o]["gloss"]) > 30]
    rng.shuffle(others)
    chosen += others[: max(0, n_wordnet - len(chosen))]
    stats["wordnet_excluded"] = sum(1 for o in synsets if not usable(o))  # slow-ish: ~80k glosses
    members: dict[str, list[Clipart]] = {}
    for clip in kept:
        if clip.key in topical:
            members.setdefault(topical[clip.key], []).append(clip)

    def concept_name(clip: Clipart) -> str:
        offset = topical.get(clip.key)
        return synsets[offset]["lemmas"][0] if offset else clip.title.lower()

    # 3. candidate pool
    pool_rows: list[dict] = []
    sources: set[str] = set()
    for name_clip in kept:
        clip = name_clip
        stem = clip.png.stem
        img = f"images/{clip.png.name}"
        tags = ", ".join(clip.keywords[:5])
        about = clip.description if clip.description and norm_text(clip.description) != norm_text(clip.title) else ""
        text = f"{clip.title}. {about}".strip() if about else f"{clip.title}: a drawing of {tags or clip.category}."
        concept = {"concept": concept_name(clip)}  # what the image shows: the trainer's concept label
        pool_rows += [
            {"did": f"{stem}:image", "txt": None, "img_path": img, "modality": "image", "source": clip.key,
             **concept},
            {"did": f"{stem}:text", "txt": text, "img_path": None, "modality": "text", "source": clip.key},
            {"did": f"{stem}:image,text", "txt": clip.title, "img_path": img, "modality": "image,text",
             "source": clip.key, **concept},
        ]
        sources.add(clip.key)
    for offset in chosen:
        syn = synsets[offset]
        pool_rows.append({"did": f"wn{offset}:text", "txt": syn["gloss"], "img_path": None, "modality": "text",
                          "source": syn["key"]})
        sources.add(syn["key"])

    # 4. queries: each clip art feeds two of the image tasks; WordNet nouns feed text->text. Positives are
    #    concept-level: every drawing of the same WordNet noun answers "a picture of an apple" and an apple
    #    image query, so the image tower must learn what is drawn, not match one drawing to its own title.
    T, I, IT = Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT  # noqa: E741
    query_rows: list[dict] = []

    def add(task: str, qmod: Modality, target: Modality, txt: str | None, img: str | None, pos: list[str],
            src: str, ignore: list[str] | None = None):
        row = {"qid": f"q{len(query_rows):06d}", "query_txt": txt, "query_img_path": img,
               "query_modality": qmod.value, "pos_cand_list": list(dict.fromkeys(pos)), "task": task,
               "target_modality": target.value, "instruction": instruction(qmod, target), "source": src}
        if ignore:  # the query's own image is in the pool: neither a positive nor a negative
            row["ignore_cand_list"] = ignore
        query_rows.append(row)

    for clip in kept:
        stem, img = clip.png.stem, f"images/{clip.png.name}"
        tasks = ["t->i", "t->i", "t->(i,t)", "i->t", "i->i", "(i,t)->t", "(i,t)->i", "(i,t)->(i,t)"]
        offset = topical.get(clip.key)
        others = [m for m in members.get(offset, []) if m is not clip] if offset else []
        group = [clip, *rng.sample(others, min(len(others), MAX_PER_CONCEPT - 1))]
        stems = [m.png.stem for m in group]
        name = concept_name(clip)
        gloss = [f"wn{offset}:text"] if offset else []

        if len(group) < 2:  # image->image needs another drawing of the same thing
            tasks = [t for t in tasks if t not in ("i->i", "(i,t)->i", "(i,t)->(i,t)")]
        others_img = [f"{s}:image" for s in stems[1:]]
        others_it = [f"{s}:image,text" for s in stems[1:]]
        for task in rng.sample(tasks, 2):
            if task == "t->i":
                words = name if rng.random() < 0.6 else clip.title.lower()
                add(task, T, I, rng.choice(TEXT_TO_IMAGE).format(words), None, [f"{s}:image" for s in stems],
                    clip.key)
            elif task == "t->(i,t)":
                words = ", ".join(clip.keywords[:4]) or clip.category
                text = rng.choice([f"{clip.title.lower()} ({words})", f"{name} with its caption", name])
                add(task, T, IT, text, None, [f"{s}:image,text" for s in stems], clip.key)
            elif task == "i->t":
                add(task, I, T, None, img, [f"{stem}:text", *gloss], clip.key)
            elif task == "i->i":
                add(task, I, I, None, img, others_img, clip.key, [f"{stem}:image", f"{stem}:image,text"])
            elif task == "(i,t)->i":
                add(task, IT, I, rng.choice(["Find another picture of this.", "Show me a similar image.",
                                             "Another image of the same thing.", "More pictures like this one."]),
                    img, others_img, clip.key, [f"{stem}:image", f"{stem}:image,text"])
            elif task == "(i,t)->(i,t)":
                add(task, IT, IT, rng.choice(["Find this picture with its title.", "The same kind of thing, captioned.",
                                              "Other captioned pictures of this."]),
                    img, others_it, clip.key, [f"{stem}:image", f"{stem}:image,text"])
            elif task == "(i,t)->t":
                add(task, IT, T, rng.choice(["What is shown in this picture?", "What is this?",
                                             "Describe this drawing."]), img, [*gloss, f"{stem}:text"], clip.key)
    for offset in chosen:
        syn = synsets[offset]
        lemmas = syn["lemmas"]
        text = lemmas[0] if len(lemmas) == 1 or rng.random() < 0.5 else f"{lemmas[0]} ({', '.join(lemmas[1:3])})"
        add("t->t", T, T, f"what is {text}?", None, [f"wn{offset}:text"], syn["key"])

    # 5. validation split: 5 % of the sources, all their queries together (no leakage through siblings)
    for row in query_rows:
        bucket = int(hashlib.sha256(row["source"].encode()).hexdigest()[:8], 16) % 100
        row["split"] = "val" if bucket < 5 else "train"

    pool_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool_rows)
    query_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in query_rows)
    atomic_write(out / "pool.jsonl", pool_text)
    atomic_write(out / "queries.jsonl", query_text)
    atomic_write(out / "sources.txt", "".join(f"{k}\n" for k in sorted(sources)))
    atomic_write(out / "image_hashes.txt", "".join(f"{c.pixel_hash}\n" for c in sorted(kept, key=lambda c: c.key)))
    tasks_count: dict[str, int] = {}
    for row in query_rows:
        tasks_count[row["task"]] = tasks_count.get(row["task"], 0) + 1
    manifest = {
        "format_version": FORMAT_VERSION,
        "image_size": RENDER_SIZE,
        "hash_size": IMAGE_SIZE,
        "seed": seed,
        "clipart": n_clipart,
        "concepts": len(members),
        "images_with_concept": sum(len(m) for m in members.values()),
        "twemoji": len(kept) - n_clipart,
        "wordnet": len(chosen),
        "pool": len(pool_rows),
        "queries": len(query_rows),
        "val_queries": sum(r["split"] == "val" for r in query_rows),
        "tasks": tasks_count,
        "skipped": stats,
        "excluded_from": str(sample_corpus),
        "excluded_concepts": str(concepts) if concepts else None,
        "fingerprint": hashlib.sha256((pool_text + query_text).encode()).hexdigest()[:16],
        "licenses": {"openclipart": "public domain (Debian openclipart-svg)",
                     "wordnet": "WordNet 3.0 licence (Princeton), Debian wordnet-base",
                     "twemoji": "CC-BY 4.0, Twitter, Inc and other contributors (npm emoji-datasource-twitter)"},
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "training_set")
    parser.add_argument("--sample-corpus", type=Path, default=ROOT / "sample_corpus",
                        help="evaluation corpus whose items must not appear in training data")
    parser.add_argument("--max-clipart", type=int, default=20000, help="default: all usable drawings")
    parser.add_argument("--wordnet", type=int, default=4000, help="number of WordNet glosses in the pool")
    parser.add_argument("--twemoji", type=Path, default=ROOT / "build" / "npm" / "node_modules"
                        / "emoji-datasource-twitter", help="emoji-datasource-twitter folder (skipped if absent)")
    parser.add_argument("--max-twemoji", type=int, default=5000, help="default: every Twemoji")
    parser.add_argument("--exclude-concepts", type=Path, default=None,
                        help="also exclude everything matching the sample corpus's concept table "
                        "(scripts/sample_corpus_concepts.py): a safe superset before sample_corpus/ exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for need in (CLIPART_DIR, WORDNET_DIR):
        if not need.is_dir():
            print(f"error: {need} is missing; apt-get install openclipart-svg wordnet-base librsvg2-bin",
                  file=sys.stderr)
            return 1
    if shutil.which("rsvg-convert") is None:
        print("error: rsvg-convert not found; apt-get install librsvg2-bin", file=sys.stderr)
        return 1
    twemoji = args.twemoji if (args.twemoji / "emoji.json").is_file() else None
    if twemoji is None:
        print(f"note: no Twemoji data in {args.twemoji}; building without it "
              "(npm install --prefix build/npm emoji-datasource-twitter)", file=sys.stderr)
    manifest = build(args.out, args.sample_corpus, args.max_clipart, args.wordnet, args.seed, args.workers,
                     twemoji, args.max_twemoji, args.exclude_concepts)
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
