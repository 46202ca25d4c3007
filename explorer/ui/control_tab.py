"""The Control tab: Supervised and Reinforcement Control and steering, per session, with revert.

The logic lives in ``explorer.methods.control``; this module turns widget values into calls, streams the
training curve, and keeps the edit in the user's own ``Session`` (never on the shared model).
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from explorer.core.errors import InputError
from explorer.core.grid import capture
from explorer.interpret.engine import make_settings
from explorer.methods.control import (
    DEFAULT_TEST_PROMPTS,
    Edit,
    Judge,
    TrainSettings,
    applied,
    compare_answers,
    concept_state,
    reinforcement_control,
    steer,
    steering_vector,
    supervised_control,
)
from explorer.ui import validate
from explorer.ui.background import TICK, iterate_in_thread, stream_callbacks
from explorer.ui.errors import friendly
from explorer.ui.explore import _as_float, _as_int
from explorer.ui.session import ModelRegistry, Session

TARGET_MODES = ("concept phrase", "cell of another prompt")
STALE_S = 6.0  # a job whose handler is not resumed for this long has lost its client


def curve_figure(values: list[float], title: str, y: str):
    import plotly.graph_objects as go

    return go.Figure({"data": [{"type": "scatter", "mode": "lines+markers", "x": list(range(1, len(values) + 1)),
                      "y": values, "name": y}],
            "layout": {"title": {"text": title}, "height": 260, "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
                       "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": y}}}})


def _reading(registry: ModelRegistry, session: Session, vector) -> str:
    ex = registry.get(session.model)
    s = make_settings(ex.lm, "refers_to", max_new_tokens=16)
    ids = ex.interpreter.generate_now(vector[None], s).ids[0]
    return ex.lm.tokenizer.decode(ids, skip_special_tokens=True).strip()


def resolve_target(registry: ModelRegistry, session: Session, mode: str, phrase: str, target_prompt: str,
                   target_token, target_layer):
    """The target state e* and a description: a phrase's last token, or a cell of another prompt."""
    ex = registry.get(session.model)
    layer = _as_int("target layer", target_layer, 0, ex.lm.n_layers)
    mode = validate.as_choice("target kind", mode, TARGET_MODES)
    limit = registry.config.max_prompt_tokens
    target_prompt = validate.as_text("target prompt", target_prompt, limit * validate.CHARS_PER_TOKEN)
    token = _as_int("target token", target_token, 0, limit)
    if mode == "concept phrase":
        phrase = validate.as_text("target concept", phrase, 500)
        if not phrase.strip():
            raise InputError("The target concept is empty: type a word or phrase.")
        vec = concept_state(ex.lm, phrase, layer) if layer >= 1 else capture(ex.lm, phrase).hidden[0, -1]
        return vec, f"'{phrase.strip()}' (last token, layer {layer})"
    target_prompt = validate.as_prompt(target_prompt, limit, "target prompt")
    grid = capture(ex.lm, target_prompt)
    grid.check_cell(layer, token)
    return grid.hidden[layer, token].clone(), f"{target_prompt!r} layer {layer} token {token} ({grid.tokens[token]!r})"


def preview_target(registry, session, mode, phrase, target_prompt, target_token, target_layer) -> str:
    vec, desc = resolve_target(registry, session, mode, phrase, target_prompt, target_token, target_layer)
    return f"**Target** {html.escape(desc)} reads as: *{html.escape(_reading(registry, session, vec))}*"


def _job(registry: ModelRegistry, session: Session) -> dict:
    """Options of a Control job: a server-wide slot, the job time limit, and a heartbeat so a job
    whose client left (or whose session closed) is noticed and stopped within a few seconds."""
    return {"slots": registry.control, "time_limit_s": registry.config.job_time_limit_s, "heartbeat_s": 1.0,
            "stale_s": STALE_S, "also_stop": lambda: session.closed}


def run_supervised(registry: ModelRegistry, session: Session, prompt: str, layer, token, mode, phrase, target_prompt,
                   target_token, target_layer, steps, lr, beta, test_prompts: str, progress=None):
    """Generator: yields (curve, before, after, answers, status) while training and at the end; None
    while the job is quiet (the handler answers it with no change)."""
    ex = registry.get(session.model)
    lm = ex.lm
    prompt = validate.as_prompt(prompt, registry.config.max_prompt_tokens, "source prompt")
    layer_i, token_i = _as_int("layer", layer, 0, lm.n_layers), _as_int("token", token, 0)
    settings = TrainSettings(_as_int("steps", steps), _as_float(lr, "learning rate"),
                             _as_float(beta, "locality weight")).validate()
    tests = validate.as_text("test prompts", test_prompts, 6 * 20 * registry.config.max_prompt_tokens)
    src = capture(lm, prompt)
    src.check_cell(layer_i, token_i)
    if layer_i < 1:
        raise InputError("Layer 0 is the embedding: pick a layer from 1 (row L edits block L-1's MLP).")
    target, desc = resolve_target(registry, session, mode, phrase, target_prompt, target_token, target_layer)
    before = _reading(registry, session, src.hidden[layer_i, token_i])
    prompts = [p.strip() for p in tests.splitlines() if p.strip()] or DEFAULT_TEST_PROMPTS

    def train(cb):
        result = supervised_control(lm, prompt, layer_i, [token_i], target, settings, target_desc=desc, on_step=cb)
        with applied(lm, result.edit):
            after_grid = capture(lm, prompt)
        after = _reading(registry, session, after_grid.hidden[layer_i, token_i])
        return result, after, pd.DataFrame(compare_answers(lm, result.edit, prompts[:6], max_new_tokens=24))

    losses: list[float] = []
    for kind, value in stream_callbacks(train, **_job(registry, session)):
        if kind == "tick":
            yield None
        elif kind == "step":
            step, loss, dist = value
            losses.append(loss)
            if progress is not None:
                progress((step, settings.steps), desc=f"step {step}: distance {dist:.1f}")
            yield curve_figure(losses, "training loss", "loss"), before, "", None, f"Training… step {step}"
        else:
            result, after, answers = value
    edit = result.edit
    _keep_edit(registry, session, edit)
    status = (f"Edit **{edit.edit_id}** (block {layer_i - 1}'s MLP) is now applied to your session only. "
              f"Distance to target {result.distances[0]:.1f} → {result.distances[-1]:.1f} "
              f"({100 * result.reduction:.0f}% lower). The Explore grid is captured again with it.")
    yield curve_figure(losses, "training loss", "loss"), before, after, answers, status


def _keep_edit(registry: ModelRegistry, session: Session, edit) -> None:
    """Give the session its new edit (unless its tab closed meanwhile) and count it in the budget."""
    if session.closed:
        return
    session.set_model_state(session.model_state.with_edit(edit), registry.get(session.model).lm)
    registry.budget.touch(session)


def run_reinforcement(registry: ModelRegistry, session: Session, prompt, layer, concept, keywords, judge_mode, steps, lr,
                      progress=None):
    ex = registry.get(session.model)
    lm = ex.lm
    prompt = validate.as_prompt(prompt, registry.config.max_prompt_tokens)
    settings = TrainSettings(_as_int("steps", steps), _as_float(lr, "learning rate"), 0.0).validate()
    concept = validate.as_text("unwanted concept", concept, 200)
    keywords = validate.as_text("keywords", keywords, 2000)
    judge = Judge(concept, keywords.split(","), mode=validate.as_choice("judge", judge_mode, ("keywords", "model")))
    layer_i = _as_int("layer", layer, 1, lm.n_layers)
    rewards: list[float] = []
    result = None
    for kind, value in stream_callbacks(lambda cb: reinforcement_control(lm, prompt, layer_i, judge, settings,
                                                                         on_step=cb), **_job(registry, session)):
        if kind == "tick":
            yield None
        elif kind == "step":
            step, reward, _texts = value
            rewards.append(reward)
            if progress is not None:
                progress((step, settings.steps), desc=f"step {step}: mean reward {reward:+.2f}")
            yield curve_figure(rewards, "mean reward", "reward"), None, f"Training… step {step}"
        else:
            result = value
    _keep_edit(registry, session, result.edit)
    table = pd.DataFrame({"token": list(range(len(result.before))), "before": result.before, "after": result.after})
    status = (f"Edit **{result.edit.edit_id}** applied to your session. Readings mentioning "
              f"{html.escape(repr(concept))}: {result.share_before:.0%} → {result.share_after:.0%}; fact retention "
              f"{result.retention_before:.0%} → {result.retention_after:.0%}.")
    yield curve_figure(rewards, "mean reward", "reward"), table, status


def run_steer(registry: ModelRegistry, session: Session, prompt, a, b, layer, alpha):
    """Generator: the steered answer as ``{"before", "after"}`` (None while the job is quiet)."""
    lm = registry.get(session.model).lm
    prompt = validate.as_prompt(prompt, registry.config.max_prompt_tokens)
    a, b = validate.as_text("concept A", a, 500), validate.as_text("concept B", b, 500)
    layer_i = _as_int("layer", layer, 0, lm.n_layers - 1)
    alpha_f = _as_float(alpha, "alpha", -20, 20)
    edit = session.edit

    def work():
        vec = steering_vector(lm, a, b, layer_i)
        with applied(lm, edit):
            yield steer(lm, prompt, vec, layer_i, alpha_f)

    for item in iterate_in_thread(work, **_job(registry, session)):
        yield None if item is TICK else item


def _status_of(sess: Session) -> str:
    if sess.edit is None:
        return "No edit applied."
    m = sess.edit.meta
    return (f"Edit **{sess.edit.edit_id}** ({html.escape(str(m.get('kind', '?')))}, layer {sess.edit.layer}) is "
            "applied to your session.")


def _supervised_panel(registry: ModelRegistry, session: gr.State, edit_status: gr.Markdown) -> None:
    """The Supervised sub-tab: source cell, target, training settings, and before/after."""
    with gr.Row():
        s_prompt = gr.Textbox("The Eiffel Tower is in the city of", label="Source prompt", scale=3,
                              elem_id="sx-s-prompt")
        s_layer = gr.Number(10, label="Layer L", precision=0, elem_id="sx-s-layer")
        s_token = gr.Number(3, label="Token", precision=0, elem_id="sx-s-token")
        use_sel = gr.Button("Use selected Explore cell")
    with gr.Row():
        t_mode = gr.Radio(["concept phrase", "cell of another prompt"], value="concept phrase", label="Target")
        t_phrase = gr.Textbox("an elephant", label="Concept phrase", elem_id="sx-t-phrase")
        t_prompt = gr.Textbox("", label="Target prompt")
        t_token = gr.Number(0, label="Target token", precision=0)
        t_layer = gr.Number(10, label="Target layer", precision=0)
    preview_btn = gr.Button("What does the target mean?")
    preview = gr.Markdown()
    with gr.Row():
        s_steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
        s_lr = gr.Number(2e-3, label="Learning rate")
        s_beta = gr.Number(10.0, label="Locality weight β")
    s_tests = gr.Textbox("\n".join(DEFAULT_TEST_PROMPTS), lines=3, label="Test prompts (one per line)")
    s_run = gr.Button("Apply Supervised Control", variant="primary", elem_id="sx-s-run")
    s_curve = gr.Plot(label="Loss")
    with gr.Row():
        s_before = gr.Textbox(label="Source reading before", elem_id="sx-s-before")
        s_after = gr.Textbox(label="Source reading after", elem_id="sx-s-after")
    s_answers = gr.Dataframe(headers=["prompt", "before", "after", "changed"], label="Answers before / after",
                             wrap=True, elem_id="sx-s-answers", column_widths=["20%", "35%", "35%", "10%"])

    def on_use_selected(sess: Session):
        if sess.grid is None or sess.selected is None:
            raise gr.Error("Select a cell in the Explore tab first.")
        return sess.grid.prompt, sess.selected[0], sess.selected[1]

    def on_preview(sess, mode, phrase, tp, tt, tl):
        return preview_target(registry, sess, mode, phrase, tp, tt, tl)

    def on_supervised(sess, prompt, layer, token, mode, phrase, tp, tt, tl, steps, lr, beta, tests,
                      request: gr.Request, progress=gr.Progress()):
        registry.bind(getattr(request, "session_hash", None), sess)
        for view in run_supervised(registry, sess, prompt, layer, token, mode, phrase, tp, tt, tl, steps, lr, beta,
                                   tests, progress):
            if view is None:
                yield (gr.skip(),) * 5
                continue
            curve, before, after, answers, status = view
            yield curve, before, after, gr.skip() if answers is None else answers, status

    use_sel.click(friendly(on_use_selected), [session], [s_prompt, s_layer, s_token])
    preview_btn.click(friendly(on_preview), [session, t_mode, t_phrase, t_prompt, t_token, t_layer], [preview],
                      concurrency_id="control", concurrency_limit=2)
    s_run.click(friendly(on_supervised), [session, s_prompt, s_layer, s_token, t_mode, t_phrase, t_prompt, t_token,
                                          t_layer, s_steps, s_lr, s_beta, s_tests],
                [s_curve, s_before, s_after, s_answers, edit_status], concurrency_id="control", concurrency_limit=2)


def _reinforcement_panel(registry: ModelRegistry, session: gr.State, edit_status: gr.Markdown) -> None:
    """The Reinforcement sub-tab: prompt, unwanted concept, judge, reward curve and readings."""
    with gr.Row():
        r_prompt = gr.Textbox("The Eiffel Tower is a famous landmark in Paris, France", label="Prompt", scale=3)
        r_layer = gr.Number(10, label="Layer L", precision=0)
        r_concept = gr.Textbox("Paris", label="Unwanted concept")
        r_keywords = gr.Textbox("paris, france, french", label="Keywords")
        r_judge = gr.Radio(["keywords", "model"], value="keywords", label="Judge")
    with gr.Row():
        r_steps = gr.Slider(1, 50, value=10, step=1, label="Steps")
        r_lr = gr.Number(2e-3, label="Learning rate")
    r_run = gr.Button("Apply Reinforcement Control", variant="primary")
    r_curve = gr.Plot(label="Reward")
    r_table = gr.Dataframe(headers=["token", "before", "after"], label="Readings before / after", wrap=True)

    def on_reinforcement(sess, prompt, layer, concept, keywords, judge, steps, lr, request: gr.Request,
                         progress=gr.Progress()):
        registry.bind(getattr(request, "session_hash", None), sess)
        for view in run_reinforcement(registry, sess, prompt, layer, concept, keywords, judge, steps, lr, progress):
            if view is None:
                yield (gr.skip(),) * 3
                continue
            curve, table, status = view
            yield curve, gr.skip() if table is None else table, status

    r_run.click(friendly(on_reinforcement), [session, r_prompt, r_layer, r_concept, r_keywords, r_judge, r_steps,
                                             r_lr], [r_curve, r_table, edit_status], concurrency_id="control",
                concurrency_limit=2)


def _steering_panel(registry: ModelRegistry, session: gr.State) -> None:
    """The Steering sub-tab: a concept difference added at one layer, before/after."""
    with gr.Row():
        v_prompt = gr.Textbox("Write one sentence about my neighbour.", label="Prompt", scale=3)
        v_a = gr.Textbox("love", label="Towards concept A")
        v_b = gr.Textbox("hate", label="Away from concept B")
        v_layer = gr.Number(10, label="Layer", precision=0)
        v_alpha = gr.Slider(-3, 3, value=0.5, step=0.1, label="alpha (in typical state norms)")
    v_run = gr.Button("Steer", variant="primary")
    with gr.Row():
        v_before = gr.Textbox(label="Before")
        v_after = gr.Textbox(label="After")

    def on_steer(sess, prompt, a, b, layer, alpha):
        for out in run_steer(registry, sess, prompt, a, b, layer, alpha):
            yield (gr.skip(), gr.skip()) if out is None else (out["before"], out["after"])

    v_run.click(friendly(on_steer), [session, v_prompt, v_a, v_b, v_layer, v_alpha], [v_before, v_after],
                concurrency_id="control", concurrency_limit=2)


def build_control_tab(registry: ModelRegistry, session: gr.State, user_error=None) -> gr.Markdown:
    """Widgets and wiring of the Control tab (inside a ``gr.Blocks``); returns its edit status line."""
    gr.Markdown("Edit one block's MLP so a hidden state means something else (Supervised Control), or so "
                "that readings stop mentioning a concept (Reinforcement Control). Edits apply to **your "
                "session only**; Revert restores the stock model exactly.")
    edit_status = gr.Markdown("No edit applied.", elem_id="sx-edit-status")
    with gr.Row():
        revert_btn = gr.Button("Revert", variant="stop", elem_id="sx-revert")
        save_btn = gr.Button("Save edit")
        edit_file = gr.DownloadButton("Download edit", visible=False)
        load_file = gr.UploadButton("Load edit (.safetensors)", file_types=[".safetensors"])
    with gr.Tab("Supervised"):
        _supervised_panel(registry, session, edit_status)
    with gr.Tab("Reinforcement"):
        _reinforcement_panel(registry, session, edit_status)
    with gr.Tab("Steering"):
        _steering_panel(registry, session)

    def on_revert(sess: Session):
        sess.set_model_state(sess.model_state.with_edit(None), registry.get(sess.model).lm)
        return "Reverted: your session no longer has a control edit."

    def on_save(sess: Session):
        if sess.edit is None:
            raise gr.Error("There is no edit to save.")
        path = sess.edit.save(sess.workdir() / f"{sess.edit.edit_id}.safetensors")
        return gr.update(value=str(path), visible=True)

    def on_load(sess: Session, file, request: gr.Request):
        registry.bind(getattr(request, "session_hash", None), sess)
        path = validate.upload_path(file, (".safetensors",))
        try:
            edit = Edit.load(path, registry.get(sess.model).lm)
        finally:
            validate.discard(path)
        _keep_edit(registry, sess, edit)
        return _status_of(sess)

    revert_btn.click(on_revert, [session], [edit_status])
    save_btn.click(friendly(on_save), [session], [edit_file])
    load_file.upload(friendly(on_load), [session, load_file], [edit_status])
    return edit_status
