"""Which token ids stand for the answers "True" and "False" right after the assistant turn starts.

Tokenizers spell a word differently at the start of a line and after a space: GPT-2/Llama-style BPE has
"True" and "ĠTrue" (the "Ġ" marks a leading space), SentencePiece has "▁True". What the model would
write next depends on how the chat template ends the generation prompt: SmolVLM's "Assistant:" is
followed by " True" (a space first), Qwen's "<|im_start|>assistant\\n" by "True" (a new line already).
"""

from __future__ import annotations

from typing import Any

from mmembed.types import MMEmbedError


class AnswerTokenError(MMEmbedError, RuntimeError):
    """The tokenizer has no usable single token for an answer word."""


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    unk = getattr(tokenizer, "unk_token_id", None)
    return int(ids[0]) if len(ids) == 1 and (unk is None or ids[0] != unk) else None


def _raw_token(tokenizer: Any, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if token_id is None or (unk is not None and token_id == unk and token != tokenizer.unk_token):
        return None
    return int(token_id)


def answer_token_id(tokenizer: Any, word: str, *, after_space: bool) -> int:
    """The id of `word` as the model would write it next; `after_space` False means a space comes first.

    Tries the spelling the template implies first, then the other one, so a tokenizer that has only one
    of them still works. Raises AnswerTokenError when `word` is no single token in any spelling.
    """
    spaced = [f" {word}", f"\u0120{word}", f"\u2581{word}"]  # plain, byte-level BPE, SentencePiece
    bare = [word]
    order = (bare + spaced) if after_space else (spaced + bare)
    for spelling in order:
        # A spelling with a marker character is a raw vocabulary entry; a plain one goes through the
        # tokenizer so that normalisers and pre-tokenisers (which add the markers) have their say.
        found = _raw_token(tokenizer, spelling) if spelling[0] in "\u0120\u2581" else _single_token(tokenizer, spelling)
        if found is not None:
            return found
    raise AnswerTokenError(f"the tokenizer has no single token for {word!r} (tried {', '.join(map(repr, order))})")


def answer_token_ids(tokenizer: Any, generation_prompt: str) -> tuple[int, int]:
    """(id of "True", id of "False") for the text that follows `generation_prompt` (the rendered prompt)."""
    after_space = not generation_prompt or generation_prompt[-1].isspace()
    true_id = answer_token_id(tokenizer, "True", after_space=after_space)
    false_id = answer_token_id(tokenizer, "False", after_space=after_space)
    if true_id == false_id:
        raise AnswerTokenError(f"'True' and 'False' map to the same token id {true_id}")
    return true_id, false_id
