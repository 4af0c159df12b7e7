"""mmembed demo: `python app.py` (or a Hugging Face Space) serves the Gradio page.

Thin on purpose: the page lives in mmembed.ui, the retrieval in mmembed. Nothing heavy happens here;
the corpus, the models and the index load on the first query (and the index is cached on disk).
Configure with MMEMBED_* environment variables (see mmembed/config.py), e.g. MMEMBED_EMBEDDER=siglip-b16.
"""

from __future__ import annotations

import logging
import os

from mmembed.ui import DemoState, build_demo, launch_options

# One line per visitor mistake (logger mmembed.ui); third-party INFO chatter (every HTTP request) stays off.
logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("mmembed").setLevel(logging.INFO)

state = DemoState()
demo = build_demo(state)  # module-level `demo` so `gradio app.py` reload mode and Spaces find it

if __name__ == "__main__":
    # Models, index and the reranker's corpus image features load in the background (a line on the page shows
    # the progress), so the first visitor does not wait for them; visitors' queries always go first.
    state.start_warmup()
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_options(state),
    )
