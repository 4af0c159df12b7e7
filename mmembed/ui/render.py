"""HTML for the demo's result columns, summaries and detail view. Every corpus or user string is escaped.

Renderers take the plain payload dicts built by `mmembed.ui.handlers` (the same data the API returns),
so what the page shows and what `gradio_client` gets cannot drift apart.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from mmembed.types import Modality

THUMB_SIDE = 160

# corpus-relative image path (a hit's "image") -> the file on the server, or None; see DemoState.image_file
ImageFiles = Callable[[str | None], str | None]


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@lru_cache(maxsize=4096)
def thumbnail_data_uri(path: str) -> str | None:
    """A small JPEG of the image at `path` as a data: URI (None if it cannot be read).

    Inline thumbnails keep the columns self-contained: nothing but the corpus folder is ever served,
    and a corpus image that went missing shows as a placeholder instead of a broken link.
    """
    from mmembed.images import ImageLoadError, load_image

    try:
        image = load_image(path, max_side=THUMB_SIDE)
    except ImageLoadError:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def modality_badge(modality: str) -> str:
    label = Modality.parse(modality).label
    css = {"text": "text", "image": "image", "image+text": "both"}[label]
    return f'<span class="mm-badge mm-badge-{css}">{esc(label)}</span>'


def _movement(hit: Mapping[str, Any]) -> str:
    label = hit.get("movement_label")
    if not label:
        return ""
    kind = "new" if label == "new" else "up" if label.startswith("↑") else "down" if label.startswith("↓") else "same"
    was = hit.get("first_stage_rank")
    title = f"was #{was} in the first stage" if was else "not in the first stage's top-k"
    return f'<span class="mm-move mm-move-{kind}" title="{esc(title)}">{esc(label)}</span>'


def render_card(hit: Mapping[str, Any], target_label: str, image_file: ImageFiles | None = None) -> str:
    match = bool(hit.get("matches_target"))
    verdict = (
        f'<span class="mm-verdict mm-ok" title="matches the requested modality">✓ {esc(target_label)}</span>'
        if match
        else f'<span class="mm-verdict mm-wrong" title="not the requested modality">✗ not {esc(target_label)}</span>'
    )
    thumb = ""
    if hit.get("image"):
        file = image_file(hit["image"]) if image_file is not None else None
        uri = thumbnail_data_uri(file) if file else None
        thumb = (
            f'<img class="mm-thumb" src="{uri}" alt="{esc(hit["id"])}">'
            if uri
            else '<div class="mm-thumb mm-thumb-missing">image unavailable</div>'
        )
    text = f'<div class="mm-text">{esc(hit["text"])}</div>' if hit.get("text") else ""
    # a ground-truth positive of an evaluation query (examples and failures opened from the Evaluate tab)
    positive = ('<span class="mm-positive" title="a ground-truth positive of this evaluation query">✓ positive'
                '</span>' if hit.get("positive") else "")
    return (
        f'<div class="mm-card {"mm-match" if match else "mm-miss"}{" mm-is-positive" if positive else ""}" '
        f'data-id="{esc(hit["id"])}" data-modality="{esc(hit["modality"])}" '
        f'data-positive="{"true" if positive else "false"}">'
        f'<div class="mm-rank">#{int(hit["rank"])}{_movement(hit)}</div>'
        f"{thumb}"
        f'<div class="mm-body"><div class="mm-meta">{positive}{modality_badge(hit["modality"])}{verdict}'
        f'<span class="mm-score" title="score">{float(hit["score"]):.3f}</span></div>'
        f'<div class="mm-id">{esc(hit["id"])}</div>{text}</div></div>'
    )


def render_column(stage: Mapping[str, Any] | None, target_label: str, *, placeholder: str, stage_id: str,
                  image_file: ImageFiles | None = None, model: str | None = None) -> str:
    """One ranked column; `stage` None (or without hits) shows `placeholder` or the stage's message.

    `image_file` finds the server file behind each hit's corpus-relative image, for its inline thumbnail.
    `model` names the model above the cards (the compare switch puts two models' first stages side by side).
    """
    if stage is None:
        return f'<div class="mm-col mm-empty" id="mm-{stage_id}">{esc(placeholder)}</div>'
    message = stage.get("message")
    hits: Sequence[Mapping[str, Any]] = stage.get("hits") or []
    note = f'<div class="mm-note mm-note-{esc(stage.get("status", "done"))}">{esc(message)}</div>' if message else ""
    if not hits:
        body = note or f'<div class="mm-empty-text">{esc(placeholder)}</div>'
        return f'<div class="mm-col mm-empty" id="mm-{stage_id}">{body}</div>'
    note = (f'<div class="mm-colmodel">{esc(model)}</div>' if model else "") + note
    rate = stage.get("wrong_modality_rate")
    header = ""
    if rate is not None:
        wrong = sum(not hit["matches_target"] for hit in hits)
        header = (
            f'<div class="mm-colhead"><b>{wrong}/{len(hits)}</b> not {esc(target_label)} '
            f'<span class="mm-rate">({rate:.0%} wrong modality)</span></div>'
        )
    cards = "".join(render_card(hit, target_label, image_file) for hit in hits)
    return f'<div class="mm-col" id="mm-{stage_id}">{note}{header}{cards}</div>'


def render_status(payload: Mapping[str, Any] | None, model_note: str = "") -> str:
    """The line under the inputs: which models ran, the instruction used, notes such as truncation."""
    if payload is None:
        return f'<div class="mm-status">{esc(model_note)}</div>' if model_note else ""
    query = payload["query"]
    embedder = payload["embedder"]
    parts = [
        f"<b>{esc(query['modality_label'])} → {esc(query['target_label'])}</b>",
        f"{esc(query['mode'])} mode",
        f"top-{int(query['top_k'])}",
        f"embedder <code>{esc(embedder['name'])}</code>",
    ]
    reranked = payload.get("reranked") or {}
    if reranked.get("reranker"):
        parts.append(f"reranker <code>{esc(reranked['reranker'])}</code>")
    # a load of a few ms means "already loaded": not worth a word in the status line
    timings = {k: v for k, v in payload.get("timings_ms", {}).items() if k != "model_and_index_load" or v >= 50}
    if timings:
        parts.append(" · ".join(f"{esc(k.replace('_', ' '))} {_ms(v)}" for k, v in timings.items()))
    if payload.get("cached"):
        parts.append("served from the result cache")
    lines = [" · ".join(parts)]
    if embedder.get("note"):
        lines.append(f'<span class="mm-warn">{esc(embedder["note"])}</span>')
    if payload.get("instruction"):
        lines.append(f"instruction: <i>{esc(payload['instruction'])}</i>")
    lines.extend(f'<span class="mm-warn">{esc(note)}</span>' for note in payload.get("notes", []))
    return '<div class="mm-status">' + "<br>".join(lines) + "</div>"


def _ms(value: float) -> str:
    return esc("<1 ms") if value < 1 else f"{value:.0f} ms"  # "0 ms" would read as "did not run"


def render_bias_summary(payload: Mapping[str, Any] | None, twin: Mapping[str, Any] | None = None) -> str:
    """Wrong-modality rate per stage in words, next to the plot (and the M_rand's, when compared)."""
    if payload is None:
        return ""
    target = payload["query"]["target_label"]
    rows = []
    stages = [("M_rand first stage", twin.get("first_stage"))] if twin is not None else []
    stages += [("First stage", payload.get("first_stage")), ("After reranking", payload.get("reranked"))]
    for title, found in stages:
        stage = found or {}
        rate = stage.get("wrong_modality_rate")
        if rate is None:
            rows.append(f'<div class="mm-rate-row"><span>{title}</span><span class="mm-muted">—</span></div>')
            continue
        level = "bad" if rate >= 0.5 else "warn" if rate > 0 else "good"
        rows.append(
            f'<div class="mm-rate-row"><span>{title}</span>'
            f'<span class="mm-rate-bar"><span class="mm-rate-fill mm-{level}" style="width:{rate * 100:.0f}%"></span>'
            f'</span><b class="mm-{level}-text">{rate:.0%}</b></div>'
        )
    pool = payload.get("pool", {})
    pool_share = next((row["pool_share"] for row in pool.get("mix", []) if row["label"] == target), None)
    pool_line = (
        f'<div class="mm-muted">The pool is {pool_share:.0%} {esc(target)} ({int(pool.get("size", 0))} items): '
        f"a retriever with no modality preference would return about that share.</div>"
        if pool_share is not None
        else ""
    )
    return (
        f'<div class="mm-bias"><div class="mm-bias-title">Wrong-modality rate (asked for '
        f"<b>{esc(target)}</b>)</div>{''.join(rows)}{pool_line}</div>"
    )


def render_details(item: Mapping[str, Any] | None) -> str:
    """Everything known about one result: full text, id, attribution and both stages' scores."""
    if item is None:
        return '<div class="mm-details mm-muted">Pick a result to see its details.</div>'
    meta = item.get("meta") or {}
    rows = [("id", item["id"]), ("modality", Modality.parse(item["modality"]).label)]
    if item.get("positive_of"):
        rows.append(("ground truth", f"✓ a positive of evaluation query {item['positive_of']}"))
    for key in ("source", "license", "credit", "topic", "title", "url"):
        if meta.get(key):
            value = str(meta[key])
            name = item.get("license_name")
            if key == "license" and name:  # full name from the corpus' ATTRIBUTION.md
                value = name if name.lower().startswith(value.lower()) else f"{value} — {name}"
            rows.append((key, value))
    not_reranked = {"off": "reranking was off", "unavailable": "no reranker could run", "error": "the reranker failed",
                    "pending": "reranking…"}.get(item.get("reranked_status") or "done")
    for key, title in (("first_stage", "first stage"), ("reranked", "after reranking")):
        stage = item.get(key)
        absent = not_reranked if key == "reranked" and not_reranked else "not in its top-k"
        rows.append((title, f"#{stage['rank']} · score {stage['score']:.4f}" if stage else absent))
    if item.get("image"):
        rows.append(("image file", Path(item["image"]).name))
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    text = f'<div class="mm-fulltext">{esc(item["text"])}</div>' if item.get("text") else ""
    return f'<div class="mm-details"><table>{table}</table>{text}</div>'


def render_detail_image(url: str | None, alt: str = "") -> str:
    """The full-size picture of the inspected result, from the corpus route (a corpus-relative URL)."""
    if not url:
        return ""
    return (f'<figure class="mm-detail-image"><img src="{esc(url)}" alt="{esc(alt)}" loading="lazy">'
            f"<figcaption>Full image</figcaption></figure>")
