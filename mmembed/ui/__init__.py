"""The Gradio demo: `build_demo()` returns the Blocks, served by app.py with `launch_options()`.

Importing this package imports no Gradio and loads no model; both happen in the functions.
"""

from mmembed.ui.layout import build_demo, launch_options
from mmembed.ui.state import DemoState

__all__ = ["DemoState", "build_demo", "launch_options"]
