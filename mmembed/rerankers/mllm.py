"""Zero-shot MLLM reranker: score = P("True") against P("False") when asked if a candidate matches the query.

Two paths give the same numbers (tests hold them to 1e-4):

- `score_naive`: one full forward pass of the model per (query, candidate) pair, images encoded each time.
  Simple and obviously right; the reference, and the benchmark's baseline.
- `score` (the fast path, used by `rerank`):
  1. every prompt starts with the query part (see prompts.py), so the longest common token prefix of all
     candidates' prompts is run through the language model ONCE and its key/value cache is copied for each
     batch of candidates, which then only run their own suffix tokens;
  2. projected image features are looked up in an `ImageFeatureCache` (keyed by image content + model
     fingerprint, memory and disk) and written into the token embeddings at the image-token positions,
     so a corpus image is encoded once, ever, not once per query;
  3. candidates run in batches, right-padded (causal attention keeps padding out of the real tokens), and
     only the two answer rows of the LM head are applied to the one hidden state per candidate we need;
  4. images are kept at one tile (no image splitting / capped pixels).

`dtype="int8"` (CPU only; MMEMBED_RERANK_DTYPE=int8 in the app): the language model's Linear layers are
dynamically quantised (int8 weights, activations quantised per call); the vision encoder stays float32, so cached
image features are shared with the float32 model. The LM head is applied as two float32 rows either way.
Activations are quantised per call with one scale per tensor, so under int8 a score depends slightly on which
candidates share its batch, and the fast and naive paths agree only approximately.

Corpus image features can be computed ahead of time (`precompute_image_features`, or
`mmembed.rerankers.precompute` for a whole corpus); with `background=True` that work runs one image at a time
and steps aside whenever a query is waiting, so a visitor never waits behind more than one image.

Supported for the fast path: Idefics3 (SmolVLM) and Qwen2-VL. Other architectures (LLaVA-NeXT) are scored
by naive forwards with their own image tiling (anyres); they are GPU models anyway.

A candidate whose image cannot be opened or that the image processor rejects is scored from its text, or gets
0.0 when it has none, with a warning naming it; one bad candidate never fails the query.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.hub import resolve_model_dir
from mmembed.images import load_image
from mmembed.progress import ProgressFn, report
from mmembed.registry import BackendInfo, BackendUnavailableError
from mmembed.rerankers.answer_tokens import answer_token_ids
from mmembed.rerankers.feature_cache import ImageFeatureCache, image_content_hash
from mmembed.rerankers.prompts import build_messages
from mmembed.types import Item, MMEmbedError, Query

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

FAST_PATH_TYPES = ("idefics3", "qwen2_vl")
# Qwen2-VL: 28x28 pixels per visual token after merging; 256 tokens is its "one image" budget on a CPU.
QWEN_PIXELS_PER_TOKEN = 28 * 28
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")


@dataclass
class _Loaded:
    model: Any
    processor: Any
    model_type: str
    image_token_id: int
    true_id: int
    false_id: int
    fingerprint: str
    features: ImageFeatureCache


@dataclass
class _Pair:
    """One candidate ready to score: its prompt and the images that fill its image slots, in order."""

    index: int
    prompt: str
    images: list[PILImage] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    query_images: int = 0  # the first `query_images` images are the query's (kept in memory only, never on disk)
    encoding: Any = None  # the processor's output for prompt + images, filled by `_pairs`


class MLLMReranker:
    """Zero-shot reranking with a multimodal LLM: the score is P("True") for "does the candidate answer the query?"."""

    def __init__(
        self,
        info: BackendInfo | None = None,
        model_id: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_text_chars: int = 1500,
        min_image_pixels: int = 16 * QWEN_PIXELS_PER_TOKEN,
        max_image_pixels: int = 256 * QWEN_PIXELS_PER_TOKEN,
        feature_cache_dir: str | Path | None = "auto",
    ) -> None:
        if batch_size < 1:
            raise MMEmbedError(f"batch_size must be at least 1, got {batch_size}")
        if dtype not in DTYPES:
            raise MMEmbedError(f"unknown reranker dtype {dtype!r}; use one of: {', '.join(DTYPES)}")
        if not 0 < min_image_pixels <= max_image_pixels:
            raise MMEmbedError(f"need 0 < min_image_pixels <= max_image_pixels, got {min_image_pixels}, "
                               f"{max_image_pixels}")
        self.info = info
        self.name = info.name if info else str(model_id)
        self.model_id = model_id or (info.hub_id if info else None)
        if not self.model_id:
            raise MMEmbedError("MLLMReranker needs a model_id (or a registry entry with a hub id)")
        self.revision = revision if revision is not None else (info.revision if info else None)
        self.device_option = device
        self.dtype_option = dtype
        self.batch_size = batch_size
        self.max_text_chars = max_text_chars
        self.min_image_pixels = min_image_pixels
        self.max_image_pixels = max_image_pixels
        self.feature_cache_dir = feature_cache_dir
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one forward at a time: concurrent CPU forwards only thrash
        # Queries waiting for or holding `_run_lock`; background precomputation waits while this is non-zero.
        self._foreground = 0
        self._foreground_changed = threading.Condition()

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_model(cls, model: Any, processor: Any, *, name: str = "in-memory", **options: Any) -> MLLMReranker:
        """Wrap an already built model + processor (benchmarks with random weights); no disk feature cache."""
        reranker = cls(model_id=name, feature_cache_dir=None, **options)
        reranker._loaded = reranker._prepare(model.eval(), processor, fingerprint=f"in-memory:{name}:{id(model)}")
        return reranker

    def _load(self) -> _Loaded:
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    self._loaded = self._load_from_disk()
        return self._loaded

    def _load_from_disk(self) -> _Loaded:
        from mmembed.devices import resolve_device, resolve_dtype

        device = resolve_device(self.device_option)
        if self.info is not None and self.info.needs_gpu and device == "cpu" and self.device_option == "auto":
            raise BackendUnavailableError(
                f"reranker {self.name!r} needs a GPU and none was found; pass device='cpu' to force it"
            )
        allow = self.info.allow_patterns if self.info else ()
        model_dir = resolve_model_dir(self.model_id, self.revision, backend=self.name, allow_patterns=allow,
                                       kind="reranker")
        from transformers import AutoModelForImageTextToText

        if self.dtype_option == "int8" and device != "cpu":
            raise MMEmbedError(f"reranker dtype 'int8' (dynamic quantisation) runs on the CPU only, not {device!r}")
        torch_dtype = resolve_dtype("float32" if self.dtype_option == "int8" else self.dtype_option, device)
        processor = _load_processor(model_dir)
        model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch_dtype, trust_remote_code=False)
        model = model.to(device).eval()
        return self._prepare(model, processor, fingerprint=_dir_fingerprint(model_dir, self.model_id, self.revision))

    def _prepare(self, model: Any, processor: Any, fingerprint: str) -> _Loaded:
        model_type = model.config.model_type
        if self.dtype_option == "int8":
            model = _quantize_for_cpu(model)
        image_processor = getattr(processor, "image_processor", None)
        if model_type == "idefics3" and image_processor is not None:
            # One tile: no splitting into sub-images; the image is squared to the encoder's native size.
            tile = int(image_processor.max_image_size["longest_edge"])
            image_processor.do_image_splitting = False
            image_processor.size = {"longest_edge": tile}
            settings = f"tile={tile}"
        elif model_type == "qwen2_vl" and image_processor is not None:
            # transformers 5 reads the pixel budget from `size`; the old attributes only trigger warnings.
            for legacy in ("min_pixels", "max_pixels"):
                if getattr(image_processor, legacy, None) is not None:
                    setattr(image_processor, legacy, None)
            image_processor.size = {"shortest_edge": self.min_image_pixels, "longest_edge": self.max_image_pixels}
            settings = f"pixels={self.min_image_pixels}-{self.max_image_pixels}"
        else:
            settings = "default"
        tokenizer = processor.tokenizer
        probe = self._render(processor, build_messages("x", False, "y", False))
        true_id, false_id = answer_token_ids(tokenizer, probe)
        image_token_id = int(getattr(model.config, "image_token_id", None) or model.config.image_token_index)
        # int8 quantises the vision encoder too: its image features are cached apart from float32's
        quantised = "|int8-dynamic" if self.dtype_option == "int8" else ""
        fingerprint = f"{fingerprint}|{model_type}|{settings}|{model.dtype}{quantised}"
        cache_dir = self._feature_dir()
        return _Loaded(model, processor, model_type, image_token_id, true_id, false_id, fingerprint,
                       ImageFeatureCache(fingerprint, cache_dir))

    def _feature_dir(self) -> Path | None:
        if self.feature_cache_dir is None:
            return None
        if self.feature_cache_dir == "auto":
            from mmembed.config import default_cache_dir

            return default_cache_dir() / "rerank-image-features"
        return Path(self.feature_cache_dir)

    @property
    def fingerprint(self) -> str:
        return self._load().fingerprint

    @property
    def caches_image_features(self) -> bool:
        """Whether this model's image features are cached (fast-path architectures); loads the model."""
        return self._load().model_type in FAST_PATH_TYPES

    @property
    def feature_cache(self) -> ImageFeatureCache:
        return self._load().features

    # ------------------------------------------------------------------------------------------------ prompts
    @staticmethod
    def _render(processor: Any, messages: list[dict[str, Any]]) -> str:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def render_prompt(self, query: Query, item: Item) -> str:
        """The exact prompt text for (query, item) before image slots are expanded (for tests and debugging)."""
        loaded = self._load()
        return self._render(loaded.processor, build_messages(
            self._clip(query.text), query.image is not None, self._clip(item.text), item.image is not None))

    def _clip(self, text: str | None) -> str | None:
        if not text or not text.strip():
            return None
        text = text.strip()
        return text if len(text) <= self.max_text_chars else text[: self.max_text_chars] + "..."

    def _pairs(self, query: Query, items: Sequence[Item]) -> tuple[list[_Pair], list[float]]:
        """Encoded prompts for every candidate; candidates that cannot be scored keep 0.0 in the returned scores.

        A candidate image that cannot be opened, or that the model's image processor rejects (e.g. Qwen2-VL
        refuses aspect ratios over 200:1), is dropped with a warning: the candidate is scored from its text,
        or keeps 0.0 when it has none. A query image that cannot be used fails the query with a clear message.
        """
        scores = [0.0] * len(items)
        query_images: list[PILImage] = []
        query_hashes: list[str] = []
        if query.image is not None:
            image = load_image(query.image)  # a broken query image fails the query, with load_image's message
            query_images, query_hashes = [image], [image_content_hash(query.image, image)]
        query_text = self._clip(query.text)
        pairs = []
        for index, item in enumerate(items):
            text = self._clip(item.text)
            pair: _Pair | None = None
            if item.image is not None:
                loaded_image = False
                try:
                    image = load_image(item.image)
                    loaded_image = True
                    candidate = (image, image_content_hash(item.image, image))
                    pair = self._pair(index, query_text, query_images, query_hashes, text, candidate)
                except Exception as exc:  # any failure of one candidate: never fail the whole query
                    if loaded_image:  # the processor refused: make sure it is not the query image's fault
                        self._check_query_image(query_text, query_images, query_hashes)
                    fallback = "scored from its text only" if text else "given score 0.0"
                    warnings.warn(f"reranker: candidate {item.id!r}: image unusable ({exc}); {fallback}", stacklevel=3)
                    if not text:
                        continue
            if pair is None:
                try:
                    pair = self._pair(index, query_text, query_images, query_hashes, text, None)
                except Exception:
                    self._check_query_image(query_text, query_images, query_hashes)
                    raise
            pairs.append(pair)
        return pairs, scores

    def _pair(self, index: int, query_text: str | None, query_images: list[PILImage], query_hashes: list[str],
              text: str | None, candidate: tuple[PILImage, str] | None) -> _Pair:
        loaded = self._load()
        messages = build_messages(query_text, bool(query_images), text, candidate is not None)
        images, hashes = list(query_images), list(query_hashes)
        if candidate is not None:
            images.append(candidate[0])
            hashes.append(candidate[1])
        pair = _Pair(index, self._render(loaded.processor, messages), images, hashes, len(query_images))
        pair.encoding = self._encode(pair)
        return pair

    def _check_query_image(self, query_text: str | None, images: list[PILImage], hashes: list[str]) -> None:
        """Raise a clear error if the query's own image is what the processor rejects (not the candidate's)."""
        if not images:
            return
        try:
            self._pair(-1, query_text, images, hashes, "-", None)
        except Exception as exc:
            raise MMEmbedError(f"the query image cannot be used by reranker {self.name!r}: {exc}") from exc

    def _encode(self, pair: _Pair) -> Any:
        if pair.encoding is not None:
            return pair.encoding
        loaded = self._load()
        images: Any = None
        if pair.images:
            images = [pair.images] if loaded.model_type == "idefics3" else pair.images
        return loaded.processor(text=[pair.prompt], images=images, return_tensors="pt")

    # ------------------------------------------------------------------------------------------------ naive path
    def score_naive(self, query: Query, items: Sequence[Item], *, progress: ProgressFn | None = None) -> list[float]:
        """One full model forward per candidate (images encoded every time): the reference path."""
        import torch

        loaded = self._load()
        with self._foreground_query():
            pairs, scores = self._pairs(query, items)
        with self._foreground_query(), self._run_lock, torch.inference_mode():
            for done, pair in enumerate(pairs, start=1):
                inputs = self._encode(pair).to(loaded.model.device)
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
                logits = loaded.model(**inputs, logits_to_keep=1).logits[0, -1]
                scores[pair.index] = _p_true(logits[[loaded.true_id, loaded.false_id]])
                report(progress, done, len(pairs), "reranking (naive)")
        return scores

    # ------------------------------------------------------------------------------------------------ fast path
    def score(self, query: Query, items: Sequence[Item], *, progress: ProgressFn | None = None) -> list[float]:
        """P("True") per item, in order; shared-prefix KV cache + cached image features + batching."""
        scores = [0.0] * len(items)  # a candidate that cannot be scored at all keeps 0.0 (see `_pairs`)
        for indices, values in self.score_batches(query, items, progress=progress):
            for i, value in zip(indices, values, strict=True):
                scores[i] = value
        return scores

    def score_batches(self, query: Query, items: Sequence[Item], *, progress: ProgressFn | None = None,
                      first_batch: int | None = None) -> Iterator[tuple[list[int], list[float]]]:
        """The scores of `score`, batch by batch as they are computed: (item indices, P("True") of each).

        What the demo's reranked column fills from. `first_batch` caps the first batch so the first cards
        come early (the shared prefix and the image features are computed once, before it, either way).
        Candidates that cannot be scored come last, with 0.0. Consume the iterator to the end (or close
        it): the model is held for one query at a time while it runs.
        """
        if not items:
            return
        with self._foreground_query():  # from here on (and while the caller consumes), background work steps aside
            yield from self._score_batches(query, items, progress, first_batch)

    def _score_batches(self, query: Query, items: Sequence[Item], progress: ProgressFn | None,
                       first_batch: int | None) -> Iterator[tuple[list[int], list[float]]]:
        import torch

        loaded = self._load()
        if loaded.model_type not in FAST_PATH_TYPES:
            yield list(range(len(items))), self.score_naive(query, items, progress=progress)
            return
        pairs, _ = self._pairs(query, items)
        scored: set[int] = set()
        if pairs:
            with self._run_lock, torch.inference_mode():
                encoded = [self._encode(pair) for pair in pairs]
                features = self._image_features(pairs, encoded)
                sequences = [self._embed(pair, enc, features) for pair, enc in zip(pairs, encoded, strict=True)]
                prefix = _common_prefix([s.keys for s in sequences])
                prefix = min(prefix, min(len(s.keys) for s in sequences) - 1)  # every candidate keeps >= 1 token
                cache = self._run_prefix(sequences[0], prefix) if prefix > 0 else None
                lengths = [len(s.keys) - prefix for s in sequences]
                done = 0
                for batch in _length_batches(lengths, self.batch_size, first=first_batch):
                    probabilities = self._run_suffixes([sequences[i] for i in batch], prefix, cache)
                    done += len(batch)
                    report(progress, done, len(pairs), "reranking")
                    indices = [pairs[i].index for i in batch]
                    scored.update(indices)
                    yield indices, probabilities
        unscorable = [i for i in range(len(items)) if i not in scored]
        if unscorable:
            yield unscorable, [0.0] * len(unscorable)

    def precompute_image_features(self, items: Sequence[Item], *, progress: ProgressFn | None = None,
                                  background: bool = False, stop: threading.Event | None = None) -> int:
        """Encode (and cache) the images of `items` now, e.g. when an index is built; returns how many were new.

        Images whose features are already cached (memory or disk) are skipped before any decoding, so an
        interrupted run resumes where it stopped. `background=True` encodes one image per step and waits
        while any query is scoring, so visitors go first; `stop` ends the work early (between images).
        """
        import torch

        loaded = self._load()
        if loaded.model_type not in FAST_PATH_TYPES:
            return 0
        todo = [item for item in items if item.image is not None and not self.has_cached_features(item)]
        step = 1 if background else self.batch_size
        new = 0
        for start in range(0, len(todo), step):
            if stop is not None and stop.is_set():
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unusable images are reported when they are scored
                pairs, _ = self._pairs(Query(text="-"), todo[start : start + step])
            pairs = [pair for pair in pairs if pair.hashes]
            if background:
                self._wait_for_queries()
            before = loaded.features.misses
            with self._run_lock, torch.inference_mode():
                self._image_features(pairs, [self._encode(pair) for pair in pairs])
            new += loaded.features.misses - before
            report(progress, min(start + step, len(todo)), len(todo), "encoding images for reranking")
        return new

    def has_cached_features(self, item: Item) -> bool:
        """Whether `item`'s image features are cached already (hashes the file; decodes nothing)."""
        if not isinstance(item.image, (str, Path)):
            return False
        try:
            key = image_content_hash(item.image)
        except OSError:
            return False  # unreadable: left to the normal path, which warns when it is scored
        return self._load().features.contains(key)

    def _foreground_query(self) -> _Foreground:
        return _Foreground(self)

    def _wait_for_queries(self) -> None:
        """Block while any query is waiting for or running the model (background work steps aside)."""
        with self._foreground_changed:
            self._foreground_changed.wait_for(lambda: self._foreground == 0)

    def _image_features(self, pairs: list[_Pair], encoded: list[Any]) -> dict[str, torch.Tensor]:
        """Projected features of every image in `pairs`, from the cache or computed (batched) and cached."""
        loaded = self._load()
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, tuple[Any, int]] = {}  # hash -> (encoding, image position within it)
        query_keys: set[str] = set()
        for pair, enc in zip(pairs, encoded, strict=True):
            query_keys.update(pair.hashes[: pair.query_images])
            for position, key in enumerate(pair.hashes):
                if key in found or key in missing:
                    continue
                cached = loaded.features.get(key)
                if cached is not None:
                    found[key] = cached.to(loaded.model.device, loaded.model.dtype)
                else:
                    missing[key] = (enc, position)
        if missing:
            computed = self._encode_images(list(missing.values()))
            for key, value in zip(missing, computed, strict=True):
                # Corpus images go to disk (encoded once, ever); a visitor's query image stays in memory only.
                loaded.features.put(key, value, persist=key not in query_keys)
                found[key] = value
        return found

    def _encode_images(self, sources: list[tuple[Any, int]]) -> list[torch.Tensor]:
        """Vision encoder + connector for the given (encoding, image position) pairs, in one batch."""
        import torch

        loaded = self._load()
        inner = loaded.model.model
        device, dtype = loaded.model.device, loaded.model.dtype
        if loaded.model_type == "idefics3":
            pixels = torch.cat([enc["pixel_values"][:, pos] for enc, pos in sources]).to(device, dtype)
            masks = torch.cat([enc["pixel_attention_mask"][:, pos] for enc, pos in sources]).to(device)
            out = inner.get_image_features(pixels[:, None], masks[:, None], return_dict=True).pooler_output
            flat = torch.cat(list(out)) if isinstance(out, (list, tuple)) else out
            return list(flat.reshape(len(sources), -1, flat.shape[-1]))
        # Qwen2-VL: pixel_values are flattened patches of all the encoding's images; cut out image `pos`.
        chunks, grids = [], []
        for enc, pos in sources:
            grid = enc["image_grid_thw"]
            sizes = grid.prod(-1).tolist()
            begin = sum(sizes[:pos])
            chunks.append(enc["pixel_values"][begin : begin + sizes[pos]])
            grids.append(grid[pos : pos + 1])
        out = inner.get_image_features(torch.cat(chunks).to(device, dtype), torch.cat(grids).to(device),
                                       return_dict=True).pooler_output
        return [t for t in out]

    def _embed(self, pair: _Pair, enc: Any, features: dict[str, torch.Tensor]) -> _Sequence:
        """Token embeddings with image features written in, plus the per-token keys used to find the prefix."""
        import torch

        loaded = self._load()
        ids = enc["input_ids"][0].to(loaded.model.device)
        embeds = loaded.model.get_input_embeddings()(ids).clone()
        is_image = ids == loaded.image_token_id
        keys = ids.tolist()
        if pair.hashes:
            stacked = torch.cat([features[h].reshape(-1, embeds.shape[-1]) for h in pair.hashes])
            if int(is_image.sum()) != stacked.shape[0]:
                raise MMEmbedError(f"prompt has {int(is_image.sum())} image tokens but its images give "
                                   f"{stacked.shape[0]} feature rows; processor and model disagree")
            embeds[is_image] = stacked.to(embeds.dtype)
            # Image tokens share one id; key them by which image fills them so different images never
            # count as a shared prefix.
            owners = [h for h, f in zip(pair.hashes, (features[h] for h in pair.hashes), strict=True)
                      for _ in range(f.reshape(-1, embeds.shape[-1]).shape[0])]
            slots = is_image.nonzero().flatten().tolist()
            for slot, owner in zip(slots, owners, strict=True):
                keys[slot] = (keys[slot], owner)
        positions = None
        if loaded.model_type == "qwen2_vl":
            grid = enc.get("image_grid_thw")
            grid = grid.to(ids.device) if grid is not None else None
            positions, _ = loaded.model.model.get_rope_index(ids[None], mm_token_type_ids=is_image[None].int(),
                                                             image_grid_thw=grid)
            positions = positions[:, 0]  # (3, seq)
        return _Sequence(keys=keys, embeds=embeds, positions=positions)

    def _language_model(self) -> Any:
        inner = self._load().model.model
        return getattr(inner, "language_model", None) or inner.text_model

    def _run_prefix(self, sequence: _Sequence, length: int) -> Any:
        from transformers import DynamicCache

        loaded = self._load()
        cache = DynamicCache(config=loaded.model.config.get_text_config())
        kwargs: dict[str, Any] = {}
        if sequence.positions is not None:
            kwargs["position_ids"] = sequence.positions[:, None, :length]
        self._language_model()(inputs_embeds=sequence.embeds[None, :length], past_key_values=cache, use_cache=True,
                               **kwargs)
        return cache

    def _run_suffixes(self, batch: list[_Sequence], prefix: int, cache: Any) -> list[float]:
        import torch

        loaded = self._load()
        lengths = [len(s.keys) - prefix for s in batch]
        width = max(lengths)
        hidden = batch[0].embeds.shape[-1]
        embeds = batch[0].embeds.new_zeros((len(batch), width, hidden))
        for row, (s, n) in enumerate(zip(batch, lengths, strict=True)):
            embeds[row, :n] = s.embeds[prefix:]  # right padding: causal attention keeps it out of real tokens
        kwargs: dict[str, Any] = {}
        if batch[0].positions is not None:
            positions = torch.zeros((3, len(batch), width), dtype=torch.long, device=embeds.device)
            for row, (s, n) in enumerate(zip(batch, lengths, strict=True)):
                positions[:, row, :n] = s.positions[:, prefix:]
                positions[:, row, n:] = s.positions[:, -1:] + 1
            kwargs["position_ids"] = positions
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(batch))
            kwargs["past_key_values"] = batch_cache
        out = self._language_model()(inputs_embeds=embeds, use_cache=cache is not None, **kwargs)
        last = out.last_hidden_state[torch.arange(len(batch)), torch.tensor(lengths) - 1]
        head = loaded.model.lm_head
        rows = head.weight[[loaded.true_id, loaded.false_id]]
        logits = last @ rows.T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[[loaded.true_id, loaded.false_id]]
        return [_p_true(row) for row in logits]


class _Foreground:
    """Marks a query as waiting/running, so background precomputation pauses until it is done."""

    def __init__(self, reranker: MLLMReranker) -> None:
        self.reranker = reranker

    def __enter__(self) -> None:
        with self.reranker._foreground_changed:
            self.reranker._foreground += 1

    def __exit__(self, *exc: object) -> None:
        with self.reranker._foreground_changed:
            self.reranker._foreground -= 1
            self.reranker._foreground_changed.notify_all()


@dataclass
class _Sequence:
    keys: list[Any]
    embeds: torch.Tensor
    positions: torch.Tensor | None


def _p_true(pair_logits: torch.Tensor) -> float:
    """softmax over the ("True", "False") logits, in float32 whatever the model's dtype."""
    return float(pair_logits.float().softmax(-1)[0])


def _length_batches(lengths: list[int], batch_size: int, waste: float = 0.1,
                   first: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length: padding costs as much compute as real tokens on a CPU,
    so a batch only grows while its padded tokens stay within `waste` of its real tokens. `first` caps the
    first batch (results shown while the rest is scored)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    if first is not None and 0 < first < len(order):
        batches.append(order[:first])
        order = order[first:]
    current: list[int] = []
    for i in order:
        grown = [*current, i]
        real = sum(lengths[j] for j in grown)
        padded = len(grown) * lengths[i]  # ascending order: the newest is the longest
        if current and (len(grown) > batch_size or padded - real > waste * real):
            batches.append(current)
            grown = [i]
        current = grown
    if current:
        batches.append(current)
    return batches


def _common_prefix(sequences: list[list[Any]]) -> int:
    first = sequences[0]
    length = len(first)
    for other in sequences[1:]:
        limit = min(length, len(other))
        n = 0
        while n < limit and first[n] == other[n]:
            n += 1
        length = n
    return length


def _quantize_for_cpu(model: Any) -> Any:
    """Dynamic int8 quantisation of the decoder's and the vision encoder's Linear layers (not the LM head).

    On a CPU an image query spends about as long in the vision encoder (its own image, 1,024 patches for
    SmolVLM) as the decoder spends on ten candidates, so both are quantised. The image features therefore
    differ from float32's: `_prepare` gives int8 its own feature-cache fingerprint. The LM head stays
    float32 because only its "True"/"False" rows are used (see `_run_suffixes`).
    """
    from mmembed.devices import quantize_dynamic_int8

    inner = model.model
    for attribute in ("language_model", "text_model", "vision_model", "visual", "vision_tower"):
        if getattr(inner, attribute, None) is not None:
            setattr(inner, attribute, quantize_dynamic_int8(getattr(inner, attribute)))
    return model


def _load_processor(model_dir: Path) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=False)
    except ImportError:
        # Qwen2-VL's processor builds a video processor that needs torchvision; images need nothing of it.
        config = model_dir / "config.json"
        if config.is_file() and '"qwen2_vl"' in config.read_text(encoding="utf-8"):
            from mmembed.rerankers.qwen_processor import QwenImageTextProcessor

            return QwenImageTextProcessor.from_pretrained(model_dir)
        raise


def _dir_fingerprint(model_dir: Path, model_id: str, revision: str | None) -> str:
    """Model id + the folder's identity (the resolved hub commit, or a local folder's content hash)."""
    from mmembed.hub import model_identity

    return f"{model_id}@{model_identity(model_dir)}"
