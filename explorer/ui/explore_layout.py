"""The Explore tab's widgets, laid out grid first.

At 1366 x 768 (a school laptop, a projector) the first screen holds, from the top: one compact row
with the gallery, the model and "Share a link"; the prompt with Run; the message line; the grid's
buttons, colour menu and job progress; and the grid itself, sized by the browser to end at the
bottom of the screen. Beside the grid: the gallery entry's explanation, the reading, and the
first-run guide (until it is dismissed). Settings, examples, the results table, downloads and sharing fold
away below.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from explorer.core.prompts import PRESETS
from explorer.methods.colouring import colour_choices
from explorer.ui import classroom, explore
from explorer.ui.causal_fields import build_causal_fields
from explorer.ui.gallery_tab import GalleryWidgets, build_gallery_controls
from explorer.ui.grid_plot import GridPlot
from explorer.ui.session import MODEL_PRESETS, AppConfig

CSS = """
#sx-top-row, #sx-prompt-row, #sx-toolbar { align-items: center; gap: 0.5em; }
#sx-top-row .sx-inline-label, #sx-toolbar .sx-inline-label { font-size: 0.85rem; color: #4b5563; white-space: nowrap; }
#sx-top-row > .block:has(.sx-inline-label), #sx-toolbar > .block:has(.sx-inline-label) {
  flex: 0 0 4.6em !important; min-width: 0 !important; }
#sx-gallery-about { font-size: 0.88rem; color: #374151; border-left: 3px solid #93c5fd; padding-left: 0.6em; }
#sx-link-row:not(:has(#sx-link:not(.hidden))) { display: none; }
#sx-gallery-about p { margin: 0; }
#sx-status { min-height: 1.4em; font-size: 0.92rem; }
#sx-status p { margin: 0; }
#sx-status .sx-error, .sx-msg .sx-error { color: #b91c1c; font-weight: 600; }
#sx-colour-help { font-size: 0.82rem; color: #4b5563; }
#sx-colour-help p { margin: 0; }
#sx-explore-tab { --layout-gap: 8px; }
#sx-job-progress { min-height: 1.6em; }
#sx-job-progress .sx-job { white-space: nowrap; overflow: hidden; }
#sx-job-progress .sx-job-text { overflow: hidden; text-overflow: ellipsis; }
"""


@dataclass
class ExploreWidgets:
    """The Explore tab's components (other tabs and the API endpoints read some of them)."""

    gallery: GalleryWidgets
    model: gr.Dropdown
    load_btn: gr.Button
    prompt: gr.Textbox
    chat: gr.Checkbox
    hide_system: gr.Checkbox
    run_btn: gr.Button
    status: gr.Markdown
    preset: gr.Dropdown
    n_placeholders: gr.Slider
    k: gr.Slider
    max_new: gr.Slider
    batch: gr.Slider
    strength: gr.Slider
    custom_user: gr.Textbox
    custom_lead: gr.Textbox
    grid_plot: gr.HTML
    row_btn: gr.Button
    col_btn: gr.Button
    all_btn: gr.Button
    stop_btn: gr.Button
    job_progress: gr.HTML
    colour: gr.Dropdown
    colour_help: gr.Markdown
    page: gr.Slider
    guide: gr.HTML
    details: gr.HTML
    table: gr.Dataframe
    export_btn: gr.Button
    csv_file: gr.DownloadButton
    json_file: gr.DownloadButton
    html_file: gr.DownloadButton
    share_btn: gr.Button
    share_file: gr.DownloadButton
    import_file: gr.UploadButton
    py_btn: gr.Button
    py_code: gr.Code
    import_evt: object = None  # the import's event, for follow-ups (the banner, the prompt box)
    causal: object = None  # the causal colour mode's answer and subject fields (ui.causal_fields)

    @property
    def settings_inputs(self) -> list:
        return [self.preset, self.custom_user, self.custom_lead, self.n_placeholders, self.k, self.max_new,
                self.strength]

    @property
    def view_outputs(self) -> list:
        """What opening a saved view (a gallery entry, a shared link) sets besides the grid and the prompt:
        the model, the colour menu, every interpretation setting and the chat wrap's hiding."""
        return [self.model, self.colour, self.colour_help, *self.settings_inputs, self.batch, self.hide_system]

    @property
    def interp_outputs(self) -> list:
        return [self.grid_plot, self.details, self.table, self.status]


def layout_top(config: AppConfig) -> dict:
    """Gallery, model and sharing in one row; the prompt with Run; the message line."""
    w: dict = {}
    with gr.Row(elem_id="sx-top-row", equal_height=True):
        w["gallery"] = build_gallery_controls()
        gr.HTML("<span class='sx-inline-label'>Model</span>", scale=0, min_width=40, padding=False)
        w["model"] = gr.Dropdown(MODEL_PRESETS if config.allow_any_model else [config.default_model],
                                 value=config.default_model, label="Model", show_label=False, container=False,
                                 allow_custom_value=config.allow_any_model, scale=2, min_width=160,
                                 elem_id="sx-model")
        w["load_btn"] = gr.Button("Load model", size="sm", scale=0, min_width=90, elem_id="sx-load")
        w["gallery"].link_btn.render()
    with gr.Row(equal_height=True, elem_id="sx-link-row"):
        w["gallery"].link.render()
        w["gallery"].loaded.render()
        w["gallery"].page_url.render()
    with gr.Row(elem_id="sx-prompt-row", equal_height=True):
        # One line that grows: Enter runs, Shift+Enter starts a new line.
        w["prompt"] = gr.Textbox(label="Prompt", show_label=False, container=False, lines=1, max_lines=6, scale=6,
                                 elem_id="sx-prompt",
                                 placeholder="Type a prompt, e.g. The Eiffel Tower is in the city of "
                                             "(Enter runs · Shift+Enter adds a new line)")
        w["run_btn"] = gr.Button("Run", variant="primary", scale=0, min_width=90, elem_id="sx-run")
        w["chat"] = gr.Checkbox(label="wrap in chat template", value=False, scale=0, min_width=190,
                                container=False)
    w["status"] = gr.Markdown("", elem_id="sx-status")
    return w


def layout_grid(gallery: GalleryWidgets) -> dict:
    """The grid's buttons, colour menu and progress above it, the grid, and the reading beside it."""
    w: dict = {}
    with gr.Row(elem_id="sx-main-row"):
        with gr.Column(scale=3, elem_id="sx-grid-col"):
            with gr.Row(elem_id="sx-toolbar", equal_height=True):
                w["row_btn"] = gr.Button("Interpret row", size="sm", elem_id="sx-row", min_width=110, scale=0)
                w["col_btn"] = gr.Button("Interpret column", size="sm", elem_id="sx-col", min_width=130, scale=0)
                w["all_btn"] = gr.Button("Interpret whole grid", size="sm", elem_id="sx-all", min_width=150, scale=0)
                w["stop_btn"] = gr.Button("Stop", variant="stop", size="sm", elem_id="sx-stop", min_width=60, scale=0)
                gr.HTML("<span class='sx-inline-label'>Colour by</span>", scale=0, min_width=76, padding=False)
                # Concepts of the session join the menu when trained (allow_custom_value: the server's check
                # sees only the registered modes; the handler accepts a concept the session holds).
                w["colour"] = gr.Dropdown(colour_choices(), value="logit_lens", label="Colour the grid by",
                                          show_label=False, container=False, allow_custom_value=True,
                                          min_width=200, elem_id="sx-colour")
            w["job_progress"] = gr.HTML("", elem_id="sx-job-progress")
            w["grid_plot"] = GridPlot(elem_id="sx-grid")
            w["colour_help"] = gr.Markdown(explore_colour_help(), elem_id="sx-colour-help")
            w["causal"] = build_causal_fields()
            w["page"] = gr.Slider(0, 1, value=0, step=1, label="First token shown", visible=False)
        with gr.Column(scale=2, min_width=280):
            gallery.about.render()
            w["details"] = gr.HTML(explore.details_html(None, None, None, None, None), elem_id="sx-details")
            w["guide"] = classroom.build_guide()
    return w


def explore_colour_help() -> str:
    from explorer.methods.colouring import COLOUR_MODES

    return f"**Colour:** {COLOUR_MODES['logit_lens'].help}"


def layout_settings(config: AppConfig) -> dict:
    """Interpretation settings, the chat wrap's hiding and the examples, folded away below the grid."""
    w: dict = {}
    with gr.Accordion("Interpretation settings", open=False, elem_id="sx-settings"):
        with gr.Row():
            w["preset"] = gr.Dropdown([*PRESETS, "custom"], value="refers_to", label="Template", elem_id="sx-preset",
                                      info="a preset fills the fields below; editing them makes it 'custom'")
            w["n_placeholders"] = gr.Slider(1, 16, value=5, step=1, label="Placeholder count K",
                                            info="how many copies of the state are written into the question")
            w["k"] = gr.Slider(0, 29, value=1, step=1, label="Injection layer k",
                               info="the layer whose input receives the state (0 = the embeddings)")
            w["max_new"] = gr.Slider(4, 64, value=20, step=1, label="Max new tokens", elem_id="sx-max-new",
                                     info="the longest reading, in tokens")
            w["batch"] = gr.Slider(1, 64, value=config.max_batch if 1 <= config.max_batch <= 64 else 64, step=1,
                                   label="Batch size", elem_id="sx-batch",
                                   info="cells read together by row, column and whole-grid jobs")
            w["strength"] = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Injection strength",
                                      info="1 replaces the placeholders by the state; less blends the two")
        with gr.Row():
            w["custom_user"] = gr.Textbox(label="Template text (user turn, {X} = the state)", elem_id="sx-custom-user",
                                          value=PRESETS["refers_to"].user)
            w["custom_lead"] = gr.Textbox(label="Lead-in (assistant turn)", value=PRESETS["refers_to"].lead_in,
                                          elem_id="sx-custom-lead")
        w["hide_system"] = gr.Checkbox(label="hide the chat template's system text", value=True,
                                       elem_id="sx-hide-system", info="start the grid at your first token")
    return w


def layout_results(prompt: gr.Textbox) -> dict:
    """Examples, the results table, downloads and sharing."""
    w: dict = {}
    gr.Examples(explore.EXAMPLES, inputs=[prompt], label="Example prompts")
    w["table"] = gr.Dataframe(headers=explore.TABLE_COLUMNS, label="Results", interactive=False, wrap=True,
                              elem_id="sx-table")
    with gr.Row():
        w["export_btn"] = gr.Button("Prepare downloads", elem_id="sx-export")
        w["csv_file"] = gr.DownloadButton("CSV", visible=False, elem_id="sx-dl-csv")
        w["json_file"] = gr.DownloadButton("JSON", visible=False, elem_id="sx-dl-json")
        w["html_file"] = gr.DownloadButton("Figure (HTML)", visible=False, elem_id="sx-dl-html")
    with gr.Accordion("Share this session", open=False):
        with gr.Row():
            w["share_btn"] = gr.Button("Export session (JSON)")
            w["share_file"] = gr.DownloadButton("Download session", visible=False)
            w["import_file"] = gr.UploadButton("Import session", file_types=[".json"])
            w["py_btn"] = gr.Button("Copy as Python")
        w["py_code"] = gr.Code(language="python", label="Reproduce this view with the Python API", visible=False)
    return w


def build_layout(config: AppConfig) -> ExploreWidgets:
    """Every widget of the Explore tab, in page order (inside ``gr.Blocks``)."""
    top = layout_top(config)
    grid = layout_grid(top["gallery"])
    settings = layout_settings(config)
    results = layout_results(top["prompt"])
    return ExploreWidgets(**top, **grid, **settings, **results)
