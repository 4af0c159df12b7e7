"""MLLM embedder speed on this machine's CPU, printed as JSON (figures, not tests).

    nice .venv/bin/python -m benchmarks.bench_embed                 # GME-2B, 2 items per kind
    nice .venv/bin/python -m benchmarks.bench_embed --n 4 --image-tokens 512

GME-2B: the full Qwen2-VL-2B architecture (values of Qwen/Qwen2-VL-2B-Instruct's config: text 1536
wide, 28 layers, 12 heads / 2 KV heads, MLP 8960, vocab 151,936; vision 32 blocks of 1280, 16
heads, patch 14, 2x2 merge into 1536) with random weights (compute does not depend on the values),
run through `GmeEmbedder`'s own prompt/pooling code on the CPU in float32. The published weights are
not downloadable here, so the weight loader is swapped for a random fill; the tokenizer is a
word-level stand-in with Qwen's special tokens (about one token per word; Qwen's BPE gives ~1.3 per
English word, so text figures are slightly optimistic). Measured: items/s for text, image and
image+text candidates (batch of `--n`, one call) and p50 latency of single text queries with an
instruction, and of image queries.

MM-Embed: its parameters are counted on the meta device (no memory) and the JSON states the
float32/bfloat16 footprint against the RAM available; float32 (32.7 GB) cannot fit in this machine's
24 GB. With --mm-embed (run alone) the full architecture is built in bfloat16 with random weights
(~17 GB) and one text candidate, one instructed text query and one image candidate (577 image
positions through 32 Mistral-7B layers) go through `MMEmbedEmbedder`:

    .venv/bin/python -m benchmarks.bench_embed --skip-gme --mm-embed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

QWEN2_VL_2B = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "model_type": "qwen2_vl",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
# --smoke: the same classes and code path at toy widths (2 layers, 64 wide); checks the script, measures nothing
SMOKE_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
               "vision_config": {**QWEN2_VL_2B["vision_config"], "depth": 2, "embed_dim": 64, "num_heads": 4,
                                 "hidden_size": 64}}
QWEN_SPECIALS = {  # Qwen2 ids
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
TEXTS = [
    "A brown dog runs across a wet beach at sunset while waves break behind it.",
    "Two children fly a red kite on a windy hill above the town.",
    "A plate of spaghetti with tomato sauce, basil leaves and grated cheese on a wooden table.",
    "An old steam locomotive crosses a stone bridge in the mountains under a cloudy sky.",
    "A cyclist in a yellow jacket rides through a busy city street in the rain.",
    "A cat sleeps curled up on a windowsill next to a potted plant.",
]


def write_gme_stub(folder: Path, smoke: bool = False) -> None:
    """config.json (full 2B values, or SMOKE_SIZES), a word-level tokenizer with Qwen's special ids, the image
    processor config."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    words = sorted(
        {w for t in TEXTS for w in t.replace(".", " .").replace(",", " ,").split()}
        | {"system", "user", "assistant", "\n"}
    )
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}, **QWEN_SPECIALS}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.add_special_tokens(list(QWEN_SPECIALS))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"})
    )
    config = {
        **QWEN2_VL_2B,
        **(SMOKE_SIZES if smoke else {}),
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    }
    (folder / "config.json").write_text(json.dumps(config))
    Qwen2VLImageProcessorPil().save_pretrained(str(folder))


def random_fill(module, model_dir, *, rename, what):
    """Stand-in for the strict loader: N(0, 0.02) weights, unit norms (denormal-free, like trained weights)."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name or "ln_" in name:
                param.fill_(1.0) if name.endswith("weight") else param.zero_()
            else:
                param.normal_(0.0, 0.02)
    return []


def make_images(folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # smooth random photo-like content at 640x480
        small = rng.random((12, 16, 3)) * 255
        image = Image.fromarray(small.astype("uint8")).resize((640, 480), Image.BICUBIC)
        path = folder / f"img{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def bench_gme(n: int, image_tokens: int, threads: int, smoke: bool = False) -> dict:
    import torch

    import mmembed.embedders.gme as gme
    from mmembed.embedders import EMBEDDERS
    from mmembed.types import Item, Modality, Query

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_gme_stub(folder, smoke)
        images = make_images(folder, n)
        original = gme.load_weights_strict
        gme.load_weights_strict = random_fill
        try:
            pixels = image_tokens * gme.PIXELS_PER_TOKEN
            emb = EMBEDDERS.get(
                "gme-2b",
                model_id=str(folder),
                device="cpu",
                batch_size=n,
                min_image_pixels=min(gme.MIN_IMAGE_PIXELS, pixels),
                max_image_pixels=pixels,
            )
            t0 = time.perf_counter()
            emb.ensure_loaded()
            load_s = time.perf_counter() - t0
        finally:
            gme.load_weights_strict = original
        params = sum(p.numel() for p in emb._model.parameters())
        result: dict = {
            "backend": "gme-2b",
            "weights": "random (toy widths: --smoke)" if smoke else "random (full Qwen2-VL-2B architecture)",
            "dtype": "float32",
            "parameters": params,
            "build_s": round(load_s, 1),
            "n_per_kind": n,
            "image_tokens_cap": image_tokens,
        }
        kinds = {
            "text": [Item(f"t{i}", text=TEXTS[i % len(TEXTS)]) for i in range(n)],
            "image": [Item(f"i{i}", image=images[i]) for i in range(n)],
            "image+text": [Item(f"it{i}", text=TEXTS[i % len(TEXTS)], image=images[i]) for i in range(n)],
        }
        emb.embed_items(kinds["text"][:1])  # warm-up (first call allocates)
        for kind, items in kinds.items():
            t0 = time.perf_counter()
            emb.embed_items(items)
            elapsed = time.perf_counter() - t0
            result[f"{kind}_items_per_s"] = round(len(items) / elapsed, 3)
            result[f"{kind}_s_per_item"] = round(elapsed / len(items), 2)
        for label, make in (
            ("text_query", lambda i: Query(text=TEXTS[i % len(TEXTS)], target=Modality.IMAGE)),
            ("image_query", lambda i: Query(image=images[i % len(images)], target=Modality.TEXT)),
        ):
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                emb.embed_query(make(i))
                times.append(time.perf_counter() - t0)
            result[f"{label}_p50_s"] = round(statistics.median(times), 2)
        EMBEDDERS.clear()
        return result


def mm_embed_report() -> dict:
    import psutil
    from transformers import CLIPVisionConfig, LlavaNextConfig

    from mmembed.embedders.mm_embed import NVEMBED_V1_LATENT_CONFIG, NVEMBED_V1_TEXT_CONFIG, construct_mm_embed

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    config = LlavaNextConfig(vision_config=vision.to_dict())
    import torch

    model, _ = construct_mm_embed(
        config, dict(NVEMBED_V1_TEXT_CONFIG), dict(NVEMBED_V1_LATENT_CONFIG), "meta", torch.float32
    )
    params = sum(p.numel() for p in model.parameters())
    available = psutil.virtual_memory().available
    bf16_bytes = params * 2
    report = {
        "backend": "mm-embed",
        "parameters": params,
        "fp32_gb": round(params * 4 / 1e9, 1),
        "bf16_gb": round(bf16_bytes / 1e9, 1),
        "available_ram_gb": round(available / 1e9, 1),
    }
    ram = "fits in" if available > 1.3 * bf16_bytes else "does not fit in"
    report["note"] = (
        f"float32 ({report['fp32_gb']} GB) cannot fit in this RAM; bfloat16 ({report['bf16_gb']} GB) {ram} the RAM "
        "available now. Timed only with --mm-embed (run it alone: it takes most of a 24 GB machine); MM-Embed is a "
        "GPU backend (needs_gpu=True) and refuses the CPU unless forced"
    )
    return report


def write_mm_embed_stub(folder: Path) -> None:
    """What nvidia/MM-Embed ships, minus the weights: a llava_next config.json (CLIP ViT-L/336 tower; the
    language model and latent attention take NV-Embed-v1's full values), a word-level tokenizer with the
    published special ids (<image> 32000, <pad> 32001 beyond the 32,000 embedding rows) and the image
    processor config."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPVisionConfig, LlavaNextConfig
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from mmembed.instructions import INSTRUCTIONS

    words = sorted({w for t in [*TEXTS, *INSTRUCTIONS.values(), "Instruct: Query:"] for w in t.split()} | {"\n"})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}, "<image>": 32000,
             "<pad>": 32001}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                 pre_tokenizers.WhitespaceSplit()])
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<image>", "<pad>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    LlavaNextConfig(vision_config=vision.to_dict(), image_token_index=32000,
                    image_grid_pinpoints=pinpoints).save_pretrained(str(folder))
    raw = json.loads((folder / "config.json").read_text())
    raw.update(padding_side="right", add_eos_token=True, global_image_patch_only=True)
    (folder / "config.json").write_text(json.dumps(raw))
    LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                               image_grid_pinpoints=pinpoints).save_pretrained(str(folder))


def bench_mm_embed(threads: int) -> dict:
    """One text candidate, one instructed text query and one image candidate through `MMEmbedEmbedder`, in
    bfloat16 with random weights (8.2B parameters: needs ~17 GB of free RAM; skipped with the reason if not)."""
    import psutil
    import torch

    import mmembed.embedders.mm_embed as mm
    from mmembed.embedders import EMBEDDERS
    from mmembed.types import Item, Modality, Query

    needed = 8_175_507_456 * 2 * 1.15
    available = psutil.virtual_memory().available
    if available < needed:
        return {"skipped": f"needs ~{needed / 1e9:.0f} GB of free RAM for bfloat16, {available / 1e9:.1f} GB free"}
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_mm_embed_stub(folder)
        images = make_images(folder, 1)
        saved = mm.checkpoint_keys, mm.load_weights_strict
        mm.checkpoint_keys = lambda _: {"language_model.embed_tokens.weight": (32000, 4096)}
        mm.load_weights_strict = random_fill
        try:
            emb = EMBEDDERS.get("mm-embed", model_id=str(folder), device="cpu", dtype="bfloat16", force_cpu=True,
                                batch_size=1)
            t0 = time.perf_counter()
            emb.ensure_loaded()
            load_s = time.perf_counter() - t0
        finally:
            mm.checkpoint_keys, mm.load_weights_strict = saved
        result: dict = {"backend": "mm-embed", "weights": "random (full MM-Embed architecture)", "dtype": "bfloat16",
                        "threads": threads, "parameters": sum(p.numel() for p in emb._model.parameters()),
                        "build_s": round(load_s, 1)}
        timings = {
            "text_candidate_s": lambda: emb.embed_items([Item("t", text=TEXTS[0])]),
            "text_query_s": lambda: emb.embed_query(Query(text=TEXTS[1], target=Modality.IMAGE)),
            "image_candidate_s": lambda: emb.embed_items([Item("i", image=images[0])]),
        }
        for label, run in timings.items():
            t0 = time.perf_counter()
            run()
            result[label] = round(time.perf_counter() - t0, 1)
        result["peak_rss_gb"] = round(psutil.Process().memory_info().rss / 1e9, 1)
        EMBEDDERS.clear()
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2, help="items per kind and queries per kind")
    parser.add_argument("--image-tokens", type=int, default=256, help="visual tokens per image (cap)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-gme", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="GME's code path at toy widths, one item per kind: checks the script, measures nothing")
    parser.add_argument("--mm-embed", action="store_true",
                        help="also time MM-Embed in bfloat16 with random weights (~17 GB RAM, minutes); run alone")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.image_tokens, args.mm_embed = 1, 16, False
    out = {
        "smoke": args.smoke,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],  # the CPU may be shared: say how busy
        }
    }
    out["mm_embed"] = mm_embed_report()  # first: the RAM figure is then not reduced by the GME model
    if args.mm_embed:
        out["mm_embed"]["timed"] = bench_mm_embed(args.threads)
    if not args.skip_gme:
        out["gme"] = bench_gme(args.n, args.image_tokens, args.threads, args.smoke)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
