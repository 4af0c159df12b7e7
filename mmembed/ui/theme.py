"""Look of the demo: Gradio theme, CSS for the result cards, and the page header."""

from __future__ import annotations

from typing import Any

HEADER = """
<div class="mm-header">
  <h1>mmembed <span>universal multimodal retrieval with multimodal LLMs</span></h1>
  <p>Ask for an <b>image</b>, a <b>text</b> or <b>both</b>. A universal retriever ranks a mixed pool of all three;
  its first stage often returns the wrong modality (<i>modality bias</i>: texts crowd out the images you asked
  for). A reranker then re-scores the candidates (an MLLM; offline, the shipped cross-encoder). Compare the
  two columns and the modality mix below.
  After <a href="https://arxiv.org/abs/2411.02571" target="_blank" rel="noopener">MM-Embed</a> (NVIDIA, 2024).</p>
</div>
"""

CSS = """
.mm-header h1 { font-size: 1.6rem; margin: 0 0 .2rem 0; }
.mm-header h1 span { font-weight: 400; font-size: 1rem; color: var(--body-text-color-subdued); margin-left: .4rem; }
.mm-header p { margin: 0; color: var(--body-text-color-subdued); max-width: 70rem; }
.mm-coltitle { margin: .2rem 0 .4rem 0; font-size: 1.1rem; }
.mm-status { font-size: .85rem; color: var(--body-text-color-subdued); line-height: 1.5; }
.mm-warn { color: #b45309; }
.mm-col { display: flex; flex-direction: column; gap: .45rem; }
.mm-empty { min-height: 6rem; border: 1px dashed var(--border-color-primary); border-radius: 10px;
  align-items: center; justify-content: center; color: var(--body-text-color-subdued); padding: 1rem; }
.mm-colhead { font-size: .85rem; color: var(--body-text-color-subdued); }
.mm-colmodel { font-size: .9rem; font-weight: 600; }
.mm-note { font-size: .9rem; padding: .6rem .8rem; border-radius: 8px; background: var(--background-fill-secondary); }
.mm-note-error, .mm-note-unavailable { border-left: 4px solid #b45309; }
.mm-card { display: flex; gap: .7rem; align-items: flex-start; padding: .5rem .6rem; border-radius: 10px;
  border: 1px solid var(--border-color-primary); background: var(--block-background-fill); }
.mm-card { cursor: pointer; }
.mm-card:hover { box-shadow: 0 1px 6px rgba(0, 0, 0, .12); }
.mm-card.mm-match { border-left: 5px solid #16a34a; }
.mm-card.mm-miss { border-left: 5px dashed #dc2626; opacity: .72; }
.mm-rank { min-width: 2.6rem; font-weight: 700; font-size: 1.05rem; display: flex; flex-direction: column;
  align-items: center; gap: .2rem; }
/* the theme's display font draws ↑/↓ as specks: movement badges use a font with full-size arrows */
.mm-move { font: 700 .82rem/1.3 "DejaVu Sans", "Segoe UI Symbol", "Noto Sans Symbols", system-ui, sans-serif;
  padding: 0 .4rem; border-radius: 6px; white-space: nowrap; }
.mm-move-up { color: #15803d; background: #dcfce7; }
.mm-move-down { color: #b91c1c; background: #fee2e2; }
.mm-move-same { color: #475569; background: #e2e8f0; }
.mm-move-new { color: #6d28d9; background: #ede9fe; }
.mm-thumb { width: 84px; height: 84px; object-fit: cover; border-radius: 8px; flex: none; }
.mm-thumb-missing { display: flex; align-items: center; justify-content: center; font-size: .7rem;
  background: var(--background-fill-secondary); text-align: center; }
.mm-body { min-width: 0; flex: 1; }
.mm-meta { display: flex; flex-wrap: wrap; gap: .35rem; align-items: center; font-size: .8rem; }
.mm-badge { padding: .05rem .45rem; border-radius: 999px; color: white; font-weight: 600; }
.mm-badge-image { background: #2563eb; }
.mm-badge-text { background: #d97706; }
.mm-badge-both { background: #059669; }
.mm-verdict { font-weight: 600; }
.mm-ok { color: #15803d; }
.mm-wrong { color: #b91c1c; }
.mm-score { margin-left: auto; font-family: var(--font-mono); color: var(--body-text-color-subdued); }
.mm-id { font-family: var(--font-mono); font-size: .72rem; color: var(--body-text-color-subdued); }
.mm-text { font-size: .88rem; line-height: 1.35; overflow-wrap: anywhere; }
.mm-bias { display: flex; flex-direction: column; gap: .5rem; padding: .8rem 1rem; }
.mm-bias-title { font-weight: 600; }
.mm-rate-row { display: grid; grid-template-columns: 8.5rem 1fr 3rem; align-items: center; gap: .5rem; }
.mm-rate-bar { height: .7rem; border-radius: 999px; background: var(--background-fill-secondary); overflow: hidden; }
.mm-rate-fill { display: block; height: 100%; }
.mm-rate-fill.mm-bad { background: #dc2626; }
.mm-rate-fill.mm-good { background: #16a34a; }
.mm-rate-fill.mm-warn { background: #f59e0b; }
.mm-bad-text { color: #b91c1c; } .mm-warn-text { color: #b45309; } .mm-good-text { color: #15803d; }
.mm-muted { color: var(--body-text-color-subdued); font-size: .85rem; }
.mm-details table { border-collapse: collapse; font-size: .88rem; border: none !important; }
.mm-details tr, .mm-details th, .mm-details td { border: none !important; padding: .2rem .9rem .2rem 0 !important;
  background: transparent !important; text-align: left; vertical-align: top; }
.mm-detail-image { margin: 0; } .mm-detail-image img { max-width: 100%; max-height: 320px; object-fit: contain; }
.mm-detail-image figcaption { font-size: .8rem; color: var(--body-text-color-subdued); }
.mm-details th { color: var(--body-text-color-subdued); font-weight: 600; }
.mm-chart, .mm-bias { border: 1px solid var(--border-color-primary); border-radius: 10px;
  background: var(--block-background-fill); }
.mm-chart { display: flex; flex-direction: column; gap: .55rem; padding: .8rem 1rem; }
.mm-chart-title { font-weight: 600; }
.mm-bar-row { display: grid; grid-template-columns: 8.5rem 1fr 6.2rem; align-items: center; gap: .6rem; }
.mm-bar-label { font-size: .88rem; }
.mm-bar { display: flex; height: 1.6rem; border-radius: 6px; overflow: hidden;
  background: var(--background-fill-secondary); }
.mm-seg { display: flex; align-items: center; justify-content: center; color: white; font-size: .75rem;
  font-weight: 700; white-space: nowrap; overflow: hidden; }
.mm-bar-rate { font-size: .85rem; font-weight: 700; text-align: right; white-space: nowrap; }
.mm-legend { display: flex; gap: 1rem; font-size: .8rem; color: var(--body-text-color-subdued); }
.mm-legend-item i { display: inline-block; width: .8rem; height: .8rem; border-radius: 3px; margin-right: .3rem;
  vertical-align: -1px; }
.mm-fulltext { margin-top: .6rem; white-space: pre-wrap; font-size: .92rem; }
"""


# Clicking a result card shows its details: "<id>|<time>" goes into a hidden textbox whose `change`
# event runs the details handler (Gradio has no click event on HTML content).
CARD_CLICK_JS = """
<script>
document.addEventListener("click", (event) => {
  const card = event.target.closest && event.target.closest(".mm-card");
  const box = document.querySelector("#clicked-id textarea, #clicked-id input");
  if (!card || !box) return;
  box.value = card.dataset.id + "|" + Date.now();
  box.dispatchEvent(new Event("input", { bubbles: true }));
});
</script>
"""


def make_theme() -> Any:
    import gradio as gr

    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")
