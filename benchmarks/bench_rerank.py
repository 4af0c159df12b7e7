"""Top-10 MLLM reranking latency on the CPU: the fast path (`MLLMReranker.score`) against the naive per-pair loop
(`MLLMReranker.score_naive`), same model, same queries, same run. Prints one JSON object.

Model: the SmolVLM-256M-Instruct architecture (Idefics3: SigLIP-base 512px/16 vision encoder, pixel-shuffle
scale 4 -> 64 image tokens, SmolLM2-135M text model). The real checkpoint is used when it is in the local HF
cache; otherwise the same architecture is initialised randomly (compute cost does not depend on the weights'
values) with an offline word-level tokenizer of the real vocabulary size, and prompts sized like real ones
(the JSON says which, and how many tokens the prompts had).

Candidates: 10 per query, mixed: 2 captions, 2 passages (~120 words), 3 images, 3 images with captions.
Queries cycle through text, image and image+text (a reference image + a modification), each with its own image
so the query image is encoded in every timed run. Cold start, two ways: `first_query_after_precompute_s` is the
first query of a just-built reranker after `precompute_corpus_features` encoded its candidates' images (what the
app's background warm-up and `index build --reranker` do); `cold_first_query_s` is a first query whose corpus
images were never seen (encoded on first use). p50/p95 are over the warm runs.

`--int8` also times the same queries with `dtype="int8"` (dynamic int8 quantisation of the language model;
interleaved with float32, so load changes hit both alike) and reports agreement with float32: the largest
score difference and Kendall's tau between the two orders of each query's 10 candidates. With random weights
that agreement is only a proxy for the real model's (the JSON says which weights were used). `--bf16` does the
same for `dtype="bfloat16"`, which pays only on CPUs with bf16 instructions (AVX512_BF16, AMX).

    .venv/bin/python -m benchmarks.bench_rerank --repeats 3        # about 5-10 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_rerank --quick            # one query per modality
    .venv/bin/python -m benchmarks.bench_rerank --quick --int8 --naive-every 0   # int8 p50 + agreement, no naive
    .venv/bin/python -m benchmarks.bench_rerank --smoke            # < 1 minute: checks the script, measures nothing
    .venv/bin/python -m benchmarks.bench_rerank --mini             # the offline cross-encoder, top-20 (its own row)

`--smoke` keeps the architecture's widths but only 2 text and 2 vision layers (random weights even when the real
checkpoint is cached) and one query per modality; its JSON says `"smoke": true` and its timings mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

HUB_ID = "HuggingFaceTB/SmolVLM-256M-Instruct"
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# SmolVLM-256M-Instruct's config.json (Idefics3): the sizes that set the compute cost.
TEXT_CONFIG = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
               "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49280, "rms_norm_eps": 1e-5,
               "rope_theta": 100000.0, "max_position_embeddings": 8192, "tie_word_embeddings": False}
VISION_CONFIG = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "image_size": 512, "patch_size": 16}
SCALE_FACTOR = 4  # (512 / 16)^2 / 4^2 = 64 image tokens per image
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "vocab_size")
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
               "patch_size")
WORDS = [
    "the", "a", "of", "on", "in", "with", "and", "is", "at", "by", "for", "to", "from", "red", "blue", "green",
    "small", "large", "old", "new", "dog", "cat", "bird", "car", "house", "tree", "river", "street", "city",
    "people", "man", "woman", "child", "table", "food", "water", "sky", "beach", "mountain", "snow", "night",
    "photo", "picture", "view", "close", "up", "image", "shows", "two", "three", "standing", "sitting", "near",
    "under", "over", "next", "behind",
]


def _tokenizer():
    """Word-level tokenizer with SmolVLM's special tokens and its vocabulary size (49152 + specials)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mmembed.rerankers import prompts

    words = set(WORDS) | {"User", "Assistant", "True", "False", "Query", "Candidate"}
    for text in [*prompts.QUESTIONS.values(), prompts.ANSWER_HINT]:
        words |= set(text.replace("?", " ").replace(".", " ").split())
    vocab = {"<unk>": 0}
    for word in sorted(words) + list(":?.,\n"):
        vocab.setdefault(word, len(vocab))
    while len(vocab) < 49152:  # filler entries: only the size matters (embedding table, LM head)
        vocab[f"tok{len(vocab)}"] = len(vocab)
    specials = ["<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>",
                "<|endoftext|>"]
    for special in specials:
        vocab[special] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"),
                                                 pre_tokenizers.Split(Regex(r"[^A-Za-z0-9<>|_\-]"), "isolated")])
    tok.add_special_tokens(["<unk>", *specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<end_of_utterance>",
                                   pad_token="<|endoftext|>")


def _random_smolvlm(layers: int | None = None):
    """SmolVLM-256M's architecture with random weights; `layers` (smoke test only) cuts both towers' depth."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from mmembed.rerankers.mllm import MLLMReranker

    tokenizer = _tokenizer()
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512}),
        tokenizer=tokenizer, image_seq_len=64, chat_template=SMOLVLM_TEMPLATE)
    depth = {"num_hidden_layers": layers} if layers else {}
    config = Idefics3Config(text_config={**TEXT_CONFIG, "pad_token_id": tokenizer.pad_token_id, **depth},
                            vision_config={**VISION_CONFIG, **depth}, scale_factor=SCALE_FACTOR,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                            pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).float().eval()
    return MLLMReranker.from_model(model, processor, name="smolvlm-256m-random", batch_size=10)


TWIN_WHAT = {
    "int8": "dtype=int8: torch dynamic int8 quantisation of the language model's and the vision encoder's Linear "
            "layers; LM head float32 (int8 image features cached apart from float32's)",
    "bfloat16": "dtype=bfloat16: every weight and activation in bfloat16 (fast only where the CPU has bf16 "
                "instructions, e.g. AVX512_BF16 / AMX; slower than float32 elsewhere)",
}


def _twin(reranker, dtype: str):
    """The same weights in another `dtype`: int8 (language model and vision encoder dynamically quantised, LM
    head float32) or bfloat16 (the whole model cast)."""
    import copy

    import torch

    from mmembed.rerankers.mllm import MLLMReranker

    loaded = reranker._load()
    model = copy.deepcopy(loaded.model)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return MLLMReranker.from_model(model, loaded.processor, name=f"{reranker.name}-{dtype}",
                                   batch_size=reranker.batch_size, dtype=dtype)


def _agreement(a: list[float], b: list[float]) -> tuple[float, float]:
    """(max |a - b|, Kendall's tau between the orders a and b give)."""
    import numpy as np
    from scipy.stats import kendalltau

    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    tau = float(kendalltau(a, b).statistic)
    return diff, tau


def _words(rng, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def _scenario(folder: Path, rng, index: int):
    """(query, 10 mixed candidates); every image file is new, so nothing is cached across queries by accident."""
    from PIL import Image

    from mmembed.types import Item, Query

    def image(name: str) -> str:
        path = folder / f"{name}.jpg"
        Image.fromarray((rng.random((480, 640, 3)) * 255).astype("uint8")).save(path, quality=85)
        return str(path)

    items = [Item(f"cap{i}", text=_words(rng, 15)) for i in range(2)]
    items += [Item(f"psg{i}", text=_words(rng, 120)) for i in range(2)]
    items += [Item(f"img{i}", image=image(f"q{index}-img{i}")) for i in range(3)]
    items += [Item(f"it{i}", text=_words(rng, 12), image=image(f"q{index}-it{i}")) for i in range(3)]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    kind = ("text", "image", "image+text")[index % 3]
    if kind == "text":
        query = Query(text=_words(rng, 10))
    elif kind == "image":
        query = Query(image=image(f"q{index}-query"))
    else:
        query = Query(text="make it " + _words(rng, 6), image=image(f"q{index}-query"))
    return kind, query, items


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed queries per query modality (default 2)")
    parser.add_argument("--quick", action="store_true", help="one timed query per modality")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    parser.add_argument("--smoke", action="store_true",
                        help="2+2 layers, one query per modality: checks the script end to end in < 1 minute")
    parser.add_argument("--int8", action="store_true",
                        help="also time dtype=int8 (quantised language model) and report agreement with float32")
    parser.add_argument("--bf16", action="store_true",
                        help="also time dtype=bfloat16 and report agreement with float32 (fast only on CPUs with "
                        "bf16 instructions)")
    parser.add_argument("--naive-every", type=int, default=1,
                        help="run the naive loop on every Nth query only (it is slow); 1 = all, 0 = never")
    parser.add_argument("--mini", action="store_true",
                        help="the offline cross-encoder mmembed-mini-rerank instead: top-20 of mmembed-mini on the "
                        "sample corpus (see bench_mini_rerank.py)")
    args = parser.parse_args()
    if args.mini:
        from benchmarks.bench_mini_rerank import run

        print(json.dumps(run(smoke=args.smoke, threads=args.threads), indent=2))
        return
    import numpy as np
    import torch

    from mmembed.hub import weights_available

    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick or args.smoke else args.repeats
    if args.smoke:
        args.naive_every = 3  # the naive loop (ten forwards) on the first query only: it is the slow part
    started = time.perf_counter()
    if args.smoke:
        reranker = _random_smolvlm(layers=2)
        weights = ("SMOKE TEST, NOT A MEASUREMENT: SmolVLM-256M-Instruct widths (Idefics3 config values) but only 2 "
                   "text and 2 vision layers, random weights")
    elif weights_available(HUB_ID):
        from mmembed.rerankers import RERANKERS

        reranker = RERANKERS.get("smolvlm-256m", device="cpu", batch_size=10, feature_cache_dir=None)
        reranker._load()
        weights = f"real ({HUB_ID} from the local HF cache)"
    else:
        reranker = _random_smolvlm()
        weights = ("random init: SmolVLM-256M-Instruct architecture (Idefics3, SigLIP-base/16 at 512px, 64 image "
                   "tokens, SmolLM2-135M); real weights not in the HF cache (offline). Word-level tokenizer of the "
                   "real vocabulary size; prompts sized like real ones (see prompt_tokens)")
    load_s = time.perf_counter() - started
    loaded = reranker._load()
    params = sum(p.numel() for p in loaded.model.parameters())

    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    fast_times: dict[str, list[float]] = {"text": [], "image": [], "image+text": []}
    naive_times: dict[str, list[float]] = {"text": [], "image": [], "image+text": []}
    # other dtypes timed on the same queries, with their agreement with float32
    twin_dtypes = [d for d, wanted in (("int8", args.int8), ("bfloat16", args.bf16)) if wanted]
    twin_times = {d: {"text": [], "image": [], "image+text": []} for d in twin_dtypes}
    twin_diffs: dict[str, list[float]] = {d: [] for d in twin_dtypes}
    twin_taus: dict[str, list[float]] = {d: [] for d in twin_dtypes}
    max_diff = 0.0
    prompt_tokens: list[int] = []

    from mmembed.rerankers.precompute import precompute_corpus_features

    # First query of a just-loaded model after its candidates' images were precomputed (the app's warm-up).
    kind, query, items = _scenario(folder, rng, 100)
    t0 = time.perf_counter()
    precompute_corpus_features(reranker, items)
    precompute_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reranker.score(query, items)
    first_after_precompute_s = time.perf_counter() - t0
    # A first query whose corpus images were never seen: they are encoded on first use.
    kind, query, items = _scenario(folder, rng, 0)
    t0 = time.perf_counter()
    reranker.score(query, items)
    cold_s = time.perf_counter() - t0
    twins = {d: _twin(reranker, d) for d in twin_dtypes}
    for twin in twins.values():
        twin.score(query, items)  # warm-up (its own allocations); images come from its own memory cache
    for index in range(3 * repeats):
        kind, query, items = _scenario(folder, rng, index)
        # Corpus features of this scenario's images are computed once, untimed, as at index time.
        reranker.precompute_image_features(items)
        for twin in twins.values():
            twin.precompute_image_features(items)
        pairs, _ = reranker._pairs(query, items)
        prompt_tokens += [int(reranker._encode(p)["input_ids"].shape[1]) for p in pairs]
        t0 = time.perf_counter()
        fast = reranker.score(query, items)
        fast_times[kind].append(time.perf_counter() - t0)
        for dtype, twin in twins.items():
            t0 = time.perf_counter()
            other = twin.score(query, items)
            twin_times[dtype][kind].append(time.perf_counter() - t0)
            diff, tau = _agreement(fast, other)
            twin_diffs[dtype].append(diff)
            twin_taus[dtype].append(tau)
        if args.naive_every > 0 and index % args.naive_every == 0:
            t0 = time.perf_counter()
            naive = reranker.score_naive(query, items)
            naive_times[kind].append(time.perf_counter() - t0)
            max_diff = max(max_diff, float(np.max(np.abs(np.asarray(fast) - np.asarray(naive)))))
        print(f"[{index + 1}/{3 * repeats}] {kind}: fast {fast_times[kind][-1]:.2f}s"
              + "".join(f", {d} {twin_times[d][kind][-1]:.2f}s (tau {twin_taus[d][-1]:.2f})" for d in twins)
              + (f", naive {naive_times[kind][-1]:.2f}s" if naive_times[kind] else ""), file=sys.stderr)

    all_fast = [t for ts in fast_times.values() for t in ts]
    all_naive = [t for ts in naive_times.values() for t in ts]
    fast_p50, naive_p50 = _percentile(all_fast, 50), _percentile(all_naive, 50)
    result = {
        "benchmark": "top-10 MLLM reranking (P(True)), fast path vs naive per-pair loop, CPU",
        "smoke": args.smoke,
        "architecture": {"model": "SmolVLM-256M-Instruct (Idefics3ForConditionalGeneration)",
                         "text": {k: loaded.model.config.text_config.to_dict()[k] for k in TEXT_KEYS},
                         "vision": {k: loaded.model.config.vision_config.to_dict()[k] for k in VISION_KEYS},
                         "scale_factor": loaded.model.config.scale_factor},
        "weights": weights,
        "parameters": params,
        "candidates_per_query": 10,
        "candidate_mix": "2 captions, 2 passages (~120 words), 3 images, 3 image+caption",
        "query_modalities": list(fast_times),
        "timed_queries": len(all_fast),
        "prompt_tokens": {"mean": float(np.mean(prompt_tokens)), "min": int(min(prompt_tokens)),
                          "max": int(max(prompt_tokens))},
        "image_tokens_per_image": 64,
        "fast_p50_s": round(fast_p50, 3),
        "fast_p95_s": round(_percentile(all_fast, 95), 3),
        "naive_p50_s": round(naive_p50, 3),
        "naive_p95_s": round(_percentile(all_naive, 95), 3),
        "speedup_p50": round(naive_p50 / fast_p50, 2),
        "speedup_p95": round(_percentile(all_naive, 95) / _percentile(all_fast, 95), 2),
        "fast_p50_by_query_modality_s": {k: round(_percentile(v, 50), 3) for k, v in fast_times.items()},
        "naive_p50_by_query_modality_s": {k: round(_percentile(v, 50), 3) for k, v in naive_times.items()},
        "cold_first_query_s": round(cold_s, 3),
        "first_query_after_precompute_s": round(first_after_precompute_s, 3),
        "precompute_10_candidates_s": round(precompute_s, 3),
        "max_abs_score_diff": max_diff,
        "targets": {"fast_p50_le_5s": fast_p50 <= 5.0,
                    "speedup_ge_3x": naive_p50 / fast_p50 >= 3.0 if all_naive else None,
                    "scores_equal_1e-4": max_diff <= 1e-4},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "model_build_or_load_s": round(load_s, 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.processor() or platform.machine()}, shared with other jobs",
        "torch": torch.__version__,
    }
    for dtype in twins:
        all_twin = [t for ts in twin_times[dtype].values() for t in ts]
        twin_p50 = _percentile(all_twin, 50)
        result[dtype] = {
            "what": TWIN_WHAT[dtype],
            f"{dtype}_fast_p50_s": round(twin_p50, 3),
            f"{dtype}_fast_p95_s": round(_percentile(all_twin, 95), 3),
            "float32_fast_p50_s_same_queries": round(fast_p50, 3),
            f"{dtype}_speedup_p50": round(fast_p50 / twin_p50, 2),
            f"{dtype}_p50_by_query_modality_s": {k: round(_percentile(v, 50), 3)
                                                 for k, v in twin_times[dtype].items()},
            "agreement_with_float32": {
                "max_abs_score_diff": round(max(twin_diffs[dtype]), 4),
                "median_abs_score_diff_max_per_query": round(float(np.median(twin_diffs[dtype])), 4),
                "kendall_tau_median": round(float(np.median(twin_taus[dtype])), 3),
                "kendall_tau_min": round(min(twin_taus[dtype]), 3),
                "queries": len(twin_taus[dtype]),
                "caveat": "random weights give near-uniform scores; agreement here is only a proxy for the real "
                          "model's" if "random" in weights or args.smoke else "real weights",
            },
        }
        result["targets"][f"{dtype}_fast_p50_le_2s"] = twin_p50 <= 2.0
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
