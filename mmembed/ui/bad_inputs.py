"""Inputs Gradio itself rejects (a wrong type, too few values: API clients) get a message, not {"error": null}."""

from __future__ import annotations

import inspect
import re
from typing import Any

import gradio as gr

from mmembed.ui.events import user_error


def explain_bad_inputs(demo: gr.Blocks) -> None:
    """Gradio raises these before any handler runs, as plain exceptions whose text it hides from clients (it
    may name server internals) and logs with a traceback. They are the client's mistake: one log line, and
    a message naming the input and what it takes.
    """
    original = demo.preprocess_data

    async def preprocess_data(block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise user_error(bad_inputs_message(block_fn, inputs, exc), block_fn.api_name or "event") from exc

    demo.preprocess_data = preprocess_data  # type: ignore[method-assign]


def bad_inputs_message(block_fn: Any, inputs: list[Any], exc: Exception) -> str:
    names = [name for name in inspect.signature(block_fn.fn).parameters if name != "progress"] \
        if callable(block_fn.fn) else []
    if len(names) != len(block_fn.inputs):
        names = [getattr(block, "label", None) or f"input {i + 1}" for i, block in enumerate(block_fn.inputs)]
    endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "this event"
    if len(inputs) < len(block_fn.inputs):
        return (f"{endpoint} takes {len(block_fn.inputs)} inputs ({', '.join(names)}); got {len(inputs)}. "
                f"Send every input, in this order.")
    found = re.search(r"at index (\d+)", str(exc))
    if found and int(found.group(1)) < len(names):
        index = int(found.group(1))
        block = block_fn.inputs[index]
        expected = {"Slider": "a number", "Number": "a number", "Checkbox": "true or false", "Textbox": "a string",
                    "Radio": "one of its choices", "Dropdown": "one of its choices",
                    "Image": "an image file (handle_file)"}.get(type(block).__name__, "another type")
        value = repr(inputs[index])
        value = value if len(value) <= 40 else value[:39] + "…"
        return f"{endpoint}: input '{names[index]}' must be {expected}, got {value} ({type(inputs[index]).__name__})."
    return f"{endpoint}: an input has the wrong type or shape; see the endpoint's parameters in the API page."
