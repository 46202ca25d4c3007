"""The Control tab: Supervised and Reinforcement Control and steering, per session, with revert.

The logic lives in ``explorer.methods.control``; this module turns widget values into calls, streams the
training curve, and keeps the edit in the user's own ``Session`` (never on the shared model).
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from explorer.core.errors import ExplorerError, InputError
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
from explorer.ui.background import stream_callbacks
from explorer.ui.explore import _as_float, _as_int
from explorer.ui.session import ModelRegistry, Session


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
    layer = _as_int("target layer", target_layer)
    if not 0 <= layer <= ex.lm.n_layers:
        raise InputError(f"The target layer must be from 0 to {ex.lm.n_layers}.")
    if mode == "concept phrase":
        if not phrase or not phrase.strip():
            raise InputError("The target concept is empty: type a word or phrase.")
        vec = concept_state(ex.lm, phrase, layer) if layer >= 1 else capture(ex.lm, phrase).hidden[0, -1]
        return vec, f"'{phrase.strip()}' (last token, layer {layer})"
    grid = capture(ex.lm, target_prompt)
    token = _as_int("target token", target_token)
    grid.check_cell(layer, token)
    return grid.hidden[layer, token].clone(), f"{target_prompt!r} layer {layer} token {token} ({grid.tokens[token]!r})"


def preview_target(registry, session, mode, phrase, target_prompt, target_token, target_layer) -> str:
    vec, desc = resolve_target(registry, session, mode, phrase, target_prompt, target_token, target_layer)
    return f"**Target** {html.escape(desc)} reads as: *{html.escape(_reading(registry, session, vec))}*"


def run_supervised(registry: ModelRegistry, session: Session, prompt: str, layer, token, mode, phrase, target_prompt,
                   target_token, target_layer, steps, lr, beta, test_prompts: str, progress=None):
    """Generator: yields (curve, before, after, answers, status) while training and at the end."""
    ex = registry.get(session.model)
    lm = ex.lm
    layer_i, token_i = _as_int("layer", layer), _as_int("token", token)
    settings = TrainSettings(_as_int("steps", steps), _as_float(lr), _as_float(beta)).validate()
    src = capture(lm, prompt)
    src.check_cell(layer_i, token_i)
    if layer_i < 1:
        raise InputError("Layer 0 is the embedding: pick a layer from 1 (row L edits block L-1's MLP).")
    target, desc = resolve_target(registry, session, mode, phrase, target_prompt, target_token, target_layer)
    before = _reading(registry, session, src.hidden[layer_i, token_i])
    losses: list[float] = []
    result = None
    for kind, value in stream_callbacks(lambda cb: supervised_control(lm, prompt, layer_i, [token_i], target, settings,
                                                                      target_desc=desc, on_step=cb)):
        if kind == "step":
            step, loss, dist = value
            losses.append(loss)
            if progress is not None:
                progress((step, settings.steps), desc=f"step {step}: distance {dist:.1f}")
            yield curve_figure(losses, "training loss", "loss"), before, "", None, f"Training… step {step}"
        else:
            result = value
    edit = result.edit
    with applied(lm, edit):
        after_grid = capture(lm, prompt)
    after = _reading(registry, session, after_grid.hidden[layer_i, token_i])
    prompts = [p.strip() for p in (test_prompts or "").splitlines() if p.strip()] or DEFAULT_TEST_PROMPTS
    answers = pd.DataFrame(compare_answers(lm, edit, prompts[:6], max_new_tokens=24))
    session.edit = edit
    status = (f"Edit **{edit.edit_id}** (block {layer_i - 1}'s MLP) is now applied to your session only. "
              f"Distance to target {result.distances[0]:.1f} → {result.distances[-1]:.1f} "
              f"({100 * result.reduction:.0f}% lower). Re-run a prompt in Explore to see its grid edited.")
    yield curve_figure(losses, "training loss", "loss"), before, after, answers, status


def run_reinforcement(registry: ModelRegistry, session: Session, prompt, layer, concept, keywords, judge_mode, steps, lr,
                      progress=None):
    ex = registry.get(session.model)
    lm = ex.lm
    settings = TrainSettings(_as_int("steps", steps), _as_float(lr), 0.0).validate()
    judge = Judge(concept or "", (keywords or "").split(","), mode=judge_mode)
    layer_i = _as_int("layer", layer)
    rewards: list[float] = []
    result = None
    for kind, value in stream_callbacks(lambda cb: reinforcement_control(lm, prompt, layer_i, judge, settings,
                                                                         on_step=cb)):
        if kind == "step":
            step, reward, _texts = value
            rewards.append(reward)
            if progress is not None:
                progress((step, settings.steps), desc=f"step {step}: mean reward {reward:+.2f}")
            yield curve_figure(rewards, "mean reward", "reward"), None, f"Training… step {step}"
        else:
            result = value
    session.edit = result.edit
    table = pd.DataFrame({"token": list(range(len(result.before))), "before": result.before, "after": result.after})
    status = (f"Edit **{result.edit.edit_id}** applied to your session. Readings mentioning {concept!r}: "
              f"{result.share_before:.0%} → {result.share_after:.0%}; fact retention "
              f"{result.retention_before:.0%} → {result.retention_after:.0%}.")
    yield curve_figure(rewards, "mean reward", "reward"), table, status


def build_control_tab(registry: ModelRegistry, session: gr.State, user_error) -> gr.Markdown:
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
                                 wrap=True, elem_id="sx-s-answers",
                                 column_widths=["20%", "35%", "35%", "10%"])
    with gr.Tab("Reinforcement"):
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
    with gr.Tab("Steering"):
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

    def status_of(sess: Session) -> str:
        if sess.edit is None:
            return "No edit applied."
        m = sess.edit.meta
        return (f"Edit **{sess.edit.edit_id}** ({m.get('kind', '?')}, layer {sess.edit.layer}) is applied to your "
                "session.")

    def on_use_selected(sess: Session):
        if sess.grid is None or sess.selected is None:
            raise gr.Error("Select a cell in the Explore tab first.")
        return sess.grid.prompt, sess.selected[0], sess.selected[1]

    def on_preview(sess, mode, phrase, tp, tt, tl):
        try:
            return preview_target(registry, sess, mode, phrase, tp, tt, tl)
        except Exception as e:
            raise user_error(e) from None

    def on_supervised(sess, prompt, layer, token, mode, phrase, tp, tt, tl, steps, lr, beta, tests,
                      request: gr.Request, progress=gr.Progress()):
        registry.bind(getattr(request, "session_hash", None), sess)
        try:
            for curve, before, after, answers, status in run_supervised(
                    registry, sess, prompt, layer, token, mode, phrase, tp, tt, tl, steps, lr, beta, tests, progress):
                yield curve, before, after, gr.skip() if answers is None else answers, status
        except Exception as e:
            raise user_error(e) from None

    def on_reinforcement(sess, prompt, layer, concept, keywords, judge, steps, lr, request: gr.Request,
                         progress=gr.Progress()):
        registry.bind(getattr(request, "session_hash", None), sess)
        try:
            for curve, table, status in run_reinforcement(registry, sess, prompt, layer, concept, keywords, judge,
                                                          steps, lr, progress):
                yield curve, gr.skip() if table is None else table, status
        except Exception as e:
            raise user_error(e) from None

    def on_steer(sess, prompt, a, b, layer, alpha):
        try:
            lm = registry.get(sess.model).lm
            layer_i = _as_int("layer", layer)
            vec = steering_vector(lm, a, b, layer_i)
            with applied(lm, sess.edit):
                out = steer(lm, prompt, vec, layer_i, _as_float(alpha))
            return out["before"], out["after"]
        except Exception as e:
            raise user_error(e) from None

    def on_revert(sess: Session):
        sess.edit = None
        return "Reverted: your session uses the stock model again."

    def on_save(sess: Session):
        if sess.edit is None:
            raise gr.Error("There is no edit to save.")
        path = sess.edit.save(sess.workdir() / f"{sess.edit.edit_id}.safetensors")
        return gr.update(value=str(path), visible=True)

    def on_load(sess: Session, file, request: gr.Request):
        registry.bind(getattr(request, "session_hash", None), sess)
        try:
            if file is None:
                raise InputError("No file was uploaded.")
            path = file if isinstance(file, str) else getattr(file, "name", str(file))
            sess.edit = Edit.load(path, registry.get(sess.model).lm)
        except ExplorerError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:
            raise user_error(e) from None
        return status_of(sess)

    use_sel.click(on_use_selected, [session], [s_prompt, s_layer, s_token])
    preview_btn.click(on_preview, [session, t_mode, t_phrase, t_prompt, t_token, t_layer], [preview],
                      concurrency_id="control", concurrency_limit=2)
    s_run.click(on_supervised, [session, s_prompt, s_layer, s_token, t_mode, t_phrase, t_prompt, t_token, t_layer,
                                s_steps, s_lr, s_beta, s_tests], [s_curve, s_before, s_after, s_answers, edit_status],
                concurrency_id="control", concurrency_limit=2)
    r_run.click(on_reinforcement, [session, r_prompt, r_layer, r_concept, r_keywords, r_judge, r_steps, r_lr],
                [r_curve, r_table, edit_status], concurrency_id="control", concurrency_limit=2)
    v_run.click(on_steer, [session, v_prompt, v_a, v_b, v_layer, v_alpha], [v_before, v_after],
                concurrency_id="control", concurrency_limit=2)
    revert_btn.click(on_revert, [session], [edit_status])
    save_btn.click(on_save, [session], [edit_file])
    load_file.upload(on_load, [session, load_file], [edit_status])
    return edit_status
