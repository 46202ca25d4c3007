"""SelfIE Explorer web app: ``python app.py`` (also the Hugging Face Spaces entry point)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from explorer.ui.app import launch

if __name__ == "__main__":
    launch(host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
