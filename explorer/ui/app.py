"""The Gradio app: one builder per tab (``*_tab`` modules) over the tabs' logic modules."""

from __future__ import annotations

import os

import gradio as gr

from explorer.ui import classroom
from explorer.ui.api_endpoints import build_api_endpoints
from explorer.ui.control_tab import build_control_tab
from explorer.ui.errors import user_error
from explorer.ui.explore_tab import build_explore_tab
from explorer.ui.gallery import warm as gallery_warm
from explorer.ui.gallery_tab import build_gallery_row, wire_gallery
from explorer.ui.guard import app_kwargs
from explorer.ui.session import AppConfig, ModelRegistry, Session
from explorer.ui.study_tabs import build_compare_tab, build_cross_tab, build_evaluate_tab

CSS = """
.sx-details { font-size: 0.95rem; line-height: 1.5; padding: 0.4em 0.2em; }
.sx-details .sx-cell { margin-bottom: 0.4em; }
.sx-interp { padding: 0.5em; border-radius: 6px; background: #fafafa; border: 1px solid #e5e7eb; min-height: 2em; }
.sx-interp span { border-radius: 3px; }
.sx-pending { color: #6b7280; font-style: italic; }
.sx-score, .sx-lens { color: #4b5563; font-size: 0.85rem; margin-top: 0.4em; }
.sx-chip { display: inline-block; background: #eef2ff; border-radius: 4px; padding: 0 4px; margin: 1px; }
.sx-empty { color: #6b7280; }
""" + classroom.CSS

INTRO = """# SelfIE Explorer
Type a prompt and press **Run**: the grid shows every hidden state of the model, one row per layer
(0 = embeddings) and one column per token. **Click a cell** and the model describes that state in
words ([SelfIE](https://arxiv.org/abs/2403.10949)); colour turns to *relevancy*, how much the words
came from the state rather than from the question. Hover a cell for its logit lens or its reading."""


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """The whole app: one builder per tab, over one model registry shared by every session."""
    config = config or AppConfig()
    registry = ModelRegistry(config)

    def new_session() -> Session:
        return Session(model=config.default_model)

    def close_session(s: Session) -> None:
        registry.forget_session(s)
        s.close()

    with gr.Blocks(title="SelfIE Explorer") as demo:
        session = gr.State(new_session, time_to_live=3 * 3600, delete_callback=close_session)
        gr.Markdown(INTRO)
        banner, _projector = classroom.build_header()
        with gr.Tab("Explore", id="explore"):
            gallery_row = build_gallery_row()
            explore = build_explore_tab(registry, session, config)
        with gr.Tab("Control", id="control"):
            control_status = build_control_tab(registry, session, user_error)
        classroom.wire_edits(registry, session, banner, control_status, explore)
        wire_gallery(gallery_row, explore, registry, session, demo, banner, control_status)
        gallery_warm(registry)  # the first entry drawn before the first visitor arrives
        with gr.Tab("Compare", id="compare"):
            build_compare_tab(registry, session, user_error)
        with gr.Tab("Cross-model", id="cross"):
            build_cross_tab(registry, session, user_error)
        with gr.Tab("Evaluate", id="evaluate"):
            build_evaluate_tab(registry, session, user_error)
        build_api_endpoints(registry, session, config)

        # Gradio deletes a closed tab's gr.State only an hour later (in case the user comes back);
        # what the session holds (grid, readings, edit, cache share) is freed as soon as the tab closes.
        # Handlers that give a session something to hold bind it to its connection (not a load event:
        # that would race the first click for the creation of the state).
        def on_close(request: gr.Request) -> None:
            registry.release(request.session_hash)

        demo.unload(on_close)
    demo.sx_registry = registry  # type: ignore[attr-defined]
    demo.sx_config = config  # type: ignore[attr-defined]
    return demo


def launch(model: str | None = None, host: str = "127.0.0.1", port: int = 7860, **kwargs) -> None:
    config = AppConfig()
    if model:
        config.default_model = model
    demo = build_app(config)
    # Load the default model before the first visitor arrives.
    demo.sx_registry.get(config.default_model)  # type: ignore[attr-defined]
    demo.queue(default_concurrency_limit=4, max_size=int(os.environ.get("SELFIE_QUEUE_SIZE", "64")))
    auth = None
    if os.environ.get("SELFIE_AUTH"):
        user, _, password = os.environ["SELFIE_AUTH"].partition(":")
        auth = (user, password)
    demo.launch(server_name=host, server_port=port, css=CSS, auth=auth, show_error=not config.public,
                app_kwargs=app_kwargs(), **kwargs)
