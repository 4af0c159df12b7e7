"""Tiny Idefics3 (SmolVLM's class) and Qwen2-VL checkpoints for reranker tests: real transformers classes,
offline word-level tokenizers with the models' special tokens and chat templates, saved with save_pretrained.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmembed.rerankers import prompts

# SmolVLM's chat template (User:/Assistant: turns, <end_of_utterance>), as the published checkpoint renders it.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
EXTRA_WORDS = (
    "User Assistant user assistant True False a photo of red blue green cat dog on the grass sky "
    "make it find picture passage about cats dogs"
)


def _vocabulary() -> list[str]:
    text = " ".join([*prompts.QUESTIONS.values(), prompts.ANSWER_HINT, prompts.QUERY_LABEL, prompts.CANDIDATE_LABEL,
                     EXTRA_WORDS])
    words = []
    for word in re.findall(r"[A-Za-z]+|[^\sA-Za-z]", text):
        if word not in words:
            words.append(word)
    return words


def _tokenizer(specials: list[str], eos: str, pad: str):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for word in [*_vocabulary(), "\n"]:
        vocab.setdefault(word, len(vocab))
    for special in specials:
        vocab[special] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", "removed"),
        pre_tokenizers.Split(Regex(r"[^A-Za-z<>|_\-]"), "isolated"),
    ])
    tok.add_special_tokens(["<unk>", *specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token=eos, pad_token=pad)


def _widen(model) -> None:
    """transformers' init (std 0.02) makes tiny models answer ~0.5 for everything; widen it so inputs matter."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.mul_(8.0)


def build_tiny_idefics3(folder: Path) -> Path:
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil as Idefics3ImageProcessor,
    )

    specials = ["<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>",
                "<|endoftext|>"]
    tokenizer = _tokenizer(specials, eos="<end_of_utterance>", pad="<|endoftext|>")
    image_processor = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                             do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=SMOLVLM_TEMPLATE)
    config = Idefics3Config(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer) + 2,
                     "max_position_embeddings": 1024, "pad_token_id": tokenizer.pad_token_id},
        scale_factor=2,  # (32 / 8)^2 / 2^2 = 4 image tokens, matching image_seq_len
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).float().eval()
    _widen(model)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def build_tiny_qwen2_vl(folder: Path) -> Path:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil as Qwen2VLImageProcessor,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>")
    image_processor = Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    # Qwen2VLProcessor itself needs torchvision (for videos); save its parts as the published repo lays them out.
    tokenizer.save_pretrained(str(folder))
    image_processor.save_pretrained(str(folder))
    (folder / "chat_template.jinja").write_text(QWEN_TEMPLATE, encoding="utf-8")
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in specials}
    config = Qwen2VLConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "vocab_size": len(tokenizer) + 2, "max_position_embeddings": 4096,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]}, "rope_theta": 10000.0},
        vision_config={"depth": 1, "embed_dim": 16, "mlp_ratio": 2, "num_heads": 2, "hidden_size": 32,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(1)
    model = Qwen2VLForConditionalGeneration(config).float().eval()
    _widen(model)
    model.save_pretrained(str(folder))
    return folder
