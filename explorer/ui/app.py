"""The Gradio app: one builder per tab (``*_tab`` modules) over the tabs' logic modules."""

from __future__ import annotations

import os

import gradio as gr

from explorer.ui import classroom
from explorer.ui.api_endpoints import build_api_endpoints
from explorer.ui.concept_tab import build_concept_tab
from explorer.ui.control_tab import build_control_tab
from explorer.ui.errors import user_error
from explorer.ui.explore_layout import CSS as EXPLORE_CSS
from explorer.ui.explore_tab import build_explore_tab
from explorer.ui.gallery import warm as gallery_warm
from explorer.ui.gallery_tab import wire_gallery
from explorer.ui.guard import app_kwargs, install_input_checks
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
.sx-list-title { font-weight: 600; margin-bottom: 0.3em; }
.sx-readings { list-style: none; padding: 0; margin: 0; max-height: 36em; overflow-y: auto; }
.sx-reading { font-size: 1.08rem; line-height: 1.45; padding: 0.25em 0.3em; border-bottom: 1px solid #f3f4f6; }
.sx-reading .sx-rlabel { display: inline-block; min-width: 7.5em; color: #374151; font-size: 0.85rem; }
.sx-reading .sx-rtext span { border-radius: 3px; }
.sx-reading .sx-rmean { color: #9a3412; margin-left: 0.4em; }
#sx-job-progress .sx-job { display: flex; align-items: center; gap: 0.6em; font-size: 0.88rem; color: #374151; }
#sx-job-progress progress { flex: 0 0 30%; height: 0.9em; accent-color: #ea580c; }
#sx-grid, .sx-details, .sx-readings { font-family: 'Noto Sans', 'DejaVu Sans', 'Noto Sans CJK SC', 'Noto Sans Arabic',
  'Noto Sans Devanagari', 'Noto Color Emoji', sans-serif; }
#sx-table th, #sx-table th * { word-break: keep-all; overflow-wrap: normal; hyphens: none; white-space: nowrap; }
""" + classroom.CSS + EXPLORE_CSS

class FreshSession:
    """The per-tab state's initial value: Gradio deep-copies it into a tab's state the first time one of
    its events reads it, and the copy is a new :class:`Session`.

    Not a factory: Gradio gives a callable initial value a page-load event of its own, whose session
    can replace the one the tab's other first events already used (a twin: the gallery entry drawn into
    one session, the colour menu and Run reading the other, closing the tab freeing the wrong one).
    """

    def __init__(self, model: str):
        self.model = model

    def __deepcopy__(self, memo) -> Session:
        return Session(model=self.model)


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """The whole app: one builder per tab, over one model registry shared by every session."""
    config = config or AppConfig()
    registry = ModelRegistry(config)

    def close_session(s: Session) -> None:
        registry.forget_session(s)
        s.close()

    # Uploaded files and other temporary files older than 15 minutes are deleted every 5 minutes (a handler
    # reads and deletes its upload at once; this cleans what nobody read).
    with gr.Blocks(title="SelfIE Explorer", delete_cache=(300, 900)) as demo:
        session = gr.State(None, time_to_live=3 * 3600, delete_callback=close_session)
        session.value = FreshSession(config.default_model)
        banner, projector, guide_btn = classroom.build_header()
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore", elem_id="sx-explore-tab"):
                explore = build_explore_tab(registry, session, config)
            with gr.Tab("Control", id="control"):
                control_status = build_control_tab(registry, session, user_error)
            with gr.Tab("Compare", id="compare"):
                build_compare_tab(registry, session, user_error)
            with gr.Tab("Cross-model", id="cross"):
                build_cross_tab(registry, session, user_error)
            with gr.Tab("Evaluate", id="evaluate"):
                build_evaluate_tab(registry, session, user_error)
            with gr.Tab("Concepts", id="concepts"):
                concepts = build_concept_tab(registry, session, explore)
        classroom.wire_header(demo, projector, guide_btn, tabs)
        classroom.wire_model_state(registry, session, banner, control_status, concepts.steer_status, explore)
        wire_gallery(explore.gallery, explore, registry, session, demo, banner, control_status)
        gallery_warm(registry)  # the first entry drawn before the first visitor arrives
        build_api_endpoints(registry, session, config)

        # Gradio deletes a closed tab's gr.State only an hour later (in case the user comes back);
        # what the session holds (grid, readings, edit, cache share) is freed as soon as the tab closes.
        # Handlers that give a session something to hold bind it to its connection (not a load event:
        # that would race the first click for the creation of the state).
        # Only the closing tab's own session is freed: the registry checks that the session bound to
        # the hash is the one this connection's state holds.
        def on_close(request: gr.Request) -> None:
            registry.release(request.session_hash, _state_of(demo, session, request.session_hash))

        demo.unload(on_close)
        # The tab's session written back as it was read: Gradio then counts the state for its time to live
        # and its delete callback (a value only read is never registered). Reading creates no twin.
        demo.load(_same, [session], [session], api_visibility="private", show_progress="hidden")
    install_input_checks(demo)
    demo.sx_registry = registry  # type: ignore[attr-defined]
    demo.sx_config = config  # type: ignore[attr-defined]
    return demo


def _same(session: Session) -> Session:
    return session


def _state_of(demo: gr.Blocks, state: gr.State, session_hash: str | None) -> Session | None:
    """The session value a connection's ``gr.State`` holds (None if it never made one)."""
    holder = getattr(demo, "state_holder", None)
    if not session_hash or holder is None or session_hash not in holder:
        return None
    data = holder.session_data[session_hash]
    value = data.state_data.get(state._id) if hasattr(data, "state_data") else None
    return value if isinstance(value, Session) else None


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
    # No fixed max_file_size: the guard applies max_upload_bytes() per request, which grows when a model
    # with larger exports is loaded.
    demo.launch(server_name=host, server_port=port, css=CSS, auth=auth, show_error=not config.public,
                app_kwargs=app_kwargs(), **kwargs)
