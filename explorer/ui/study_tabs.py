"""The Compare, Cross-model and Evaluate tabs: thin views over ``explorer.methods.compare``,
``explorer.methods.crossmodel`` and ``explorer.methods.evaluation``."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from explorer.core.errors import InputError
from explorer.methods.compare import compare_prompts
from explorer.methods.evaluation import DEFAULT_TASK_DIR, evaluate_attributes, evaluate_token_identity, resolve_tasks
from explorer.ui import validate
from explorer.ui.background import TICK, iterate_in_thread
from explorer.ui.explore import _as_int
from explorer.ui.session import MODEL_PRESETS, ModelRegistry, Session

MAX_CROSS_TOKENS = 32


def _study_job(registry: ModelRegistry, work, session: Session | None = None):
    """Run ``work()`` as a stoppable job, under ``session``'s model state (its edit and steering) when
    given: it stops when its client leaves or passes the time limit; yields None while it is quiet (so
    Gradio can notice a departed client), then its result."""
    context = (lambda: session.job_context(registry.get(session.model).lm)) if session is not None else None
    for item in iterate_in_thread(lambda: iter([work()]), time_limit_s=registry.config.job_time_limit_s,
                                  heartbeat_s=1.0, stale_s=6.0, **({"context": context} if context else {})):
        yield None if item is TICK else item


def read_with(session: Session) -> str:
    """The sentence each study tab shows: which model its readings use."""
    return f"Read with {html.escape(session.model_state.describe())} (this session's model)."


def _layers(text: str, n_layers: int) -> list[int]:
    text = validate.as_text("layers", text, 200)
    try:
        layers = [int(x) for x in (text or "").replace(" ", "").split(",") if x]
    except ValueError as e:
        raise InputError("Layers are whole numbers separated by commas, e.g. 5,10,15.") from e
    if not layers or any(not 0 <= layer <= n_layers for layer in layers):
        raise InputError(f"Layers must be from 0 to {n_layers}.")
    if len(layers) > 12:
        raise InputError("Compare at most 12 layers at once.")
    return layers


def _pair(name: str, text) -> tuple[str, str] | None:
    """``"x"`` -> (x, x); ``"x | y"`` -> (x, y); empty -> None."""
    text = validate.as_text(name, text, 400)
    if not text.strip():
        return None
    parts = [p.strip() for p in text.split("|")]
    if len(parts) > 2 or not all(parts):
        raise InputError(f"Write the {name} as one text for both prompts, or A's and B's split by one |.")
    return (parts[0], parts[-1])


def build_compare_tab(registry: ModelRegistry, session: gr.State, user_error) -> None:
    gr.Markdown("Two prompts side by side: tokens are aligned by their text, the same cells of both are read "
                "with SelfIE, and the cells whose readings differ are highlighted.")
    with gr.Row():
        a = gr.Textbox("The cat sat on the mat", label="Prompt A")
        b = gr.Textbox("The dog sat on the mat", label="Prompt B")
        layers = gr.Textbox("5,10,15,20", label="Layers")
        max_new = gr.Slider(4, 32, value=10, step=1, label="Max new tokens")
    colouring = gr.Radio([("readings differ", "readings"), ("region-code Hamming distance (MLP geometry)", "hamming"),
                          ("causal effect on the answer, A minus B", "causal")],
                         value="readings", label="Colour the comparison by", elem_id="sx-compare-colouring")
    with gr.Row():
        answers = gr.Textbox("", label="Answers for the causal comparison (A | B)", placeholder="Paris | Rome",
                             elem_id="sx-compare-answers", info="one answer for both, or A's and B's split by |")
        subjects = gr.Textbox("", label="Subjects (A | B, optional)", placeholder="Eiffel Tower | Colosseum",
                              elem_id="sx-compare-subjects", info="empty: the first capitalised name of each prompt")
    run = gr.Button("Compare", variant="primary")
    note = gr.Markdown(elem_id="sx-compare-note")
    plot = gr.Plot()
    table = gr.Dataframe(headers=["layer", "token_a", "token_b", "text_a", "text_b", "reading_a", "reading_b", "differs"],
                         column_widths=["6%", "7%", "7%", "8%", "8%", "28%", "28%", "8%"], wrap=True)

    def on_compare(sess: Session, pa, pb, ls, mn, colour, ans, subj, progress=gr.Progress(track_tqdm=True)):
        import plotly.graph_objects as go

        try:
            ex = registry.get(sess.model)
            limit = registry.config.max_prompt_tokens
            pa, pb = validate.as_prompt(pa, limit, "prompt A"), validate.as_prompt(pb, limit, "prompt B")
            layer_list = _layers(ls, ex.lm.n_layers)
            settings = ex.settings(max_new_tokens=_as_int("max new tokens", mn, 1, 64))
            answer_pair = _pair("answers", ans) if colour == "causal" else None
            if colour == "causal" and answer_pair is None:
                raise InputError("Type the answer each prompt should lead to (one for both, or A | B).")
            subject_pair = _pair("subjects", subj) or (None, None)
            progress(0.1, desc="interpreting both prompts")
            job = _study_job(registry, lambda: compare_prompts(ex, pa, pb, layer_list, settings, colouring=colour,
                                                               answers=answer_pair, subjects=subject_pair), sess)
            for cmp in job:
                yield ((gr.skip(),) * 3 if cmp is None
                       else (go.Figure(cmp.figure()), pd.DataFrame(cmp.rows()), read_with(sess)))
        except Exception as e:
            raise user_error(e) from None

    run.click(on_compare, [session, a, b, layers, max_new, colouring, answers, subjects], [plot, table, note],
              concurrency_id="study", concurrency_limit=1)


def build_evaluate_tab(registry: ModelRegistry, session: gr.State, user_error) -> None:
    gr.Markdown("How far can each reading be trusted, layer by layer? **Token identity**: how often the "
                "token-identity Patchscope and the logit lens name the token the model itself predicts next. "
                "**Attribute extraction**: whether a subject's state, patched into \"The capital city of x\" and the "
                "like, makes the model say the right attribute (only facts the model knows count). A small sample "
                "here; `python -m explorer evaluate` runs the full one.")
    with gr.Row():
        positions = gr.Slider(10, 200, value=40, step=10, label="Corpus positions (token identity)")
        samples = gr.Slider(1, 10, value=3, step=1, label="Samples per task (attributes)")
        step = gr.Slider(1, 10, value=5, step=1, label="Every n-th layer")
    run = gr.Button("Run evaluation", variant="primary")
    note = gr.Markdown(elem_id="sx-evaluate-note")
    plot = gr.Plot()
    with gr.Row():
        ti_table = gr.Dataframe(label="Token identity precision@1")
        att_table = gr.Dataframe(label="Attribute extraction accuracy")

    def on_eval(sess: Session, n_pos, n_samples, every, progress=gr.Progress()):
        try:
            lm = registry.get(sess.model).lm
            layers = list(range(0, lm.n_layers + 1, _as_int("layer step", every, 1, 10)))
            n_pos_i, n_samples_i = _as_int("positions", n_pos, 1, 200), _as_int("samples", n_samples, 1, 10)
            for out in _study_job(registry, lambda: evaluation(lm, layers, n_pos_i, n_samples_i, progress), sess):
                yield (gr.skip(),) * 4 if out is None else (*out, read_with(sess))
        except Exception as e:
            raise user_error(e) from None

    run.click(on_eval, [session, positions, samples, step], [plot, ti_table, att_table, note], concurrency_id="study",
              concurrency_limit=1)


def evaluation(lm, layers: list[int], n_pos: int, n_samples: int, progress):
    """The Evaluate tab's small sample: a figure and the two tables."""
    import plotly.graph_objects as go

    progress(0.05, desc="token identity")
    ti = evaluate_token_identity(lm, n_positions=n_pos, layers=layers)
    att = pd.DataFrame()
    if DEFAULT_TASK_DIR.is_dir():
        progress(0.5, desc="attribute extraction")
        tasks = resolve_tasks("all", DEFAULT_TASK_DIR)[:3]
        att = evaluate_attributes(lm, tasks, layers=[x for x in layers if x < lm.n_layers],
                                  samples=n_samples, candidates=12, log=lambda m: None)
    fig = go.Figure()
    fig.add_scatter(x=ti["layer"], y=ti["patchscope"], name="token identity Patchscope")
    fig.add_scatter(x=ti["layer"], y=ti["logit_lens"], name="logit lens")
    for task, part in att.groupby("task") if len(att) else []:
        fig.add_scatter(x=part["layer"], y=part["accuracy"], name=f"{task} (n={part['baseline_correct'].iloc[0]})",
                        line={"dash": "dot"})
    fig.update_layout(height=380, xaxis_title="layer", yaxis_title="precision / accuracy")
    return fig, ti, att


def cross_read(registry: ModelRegistry, session: Session, reader: str, source_layer, reader_layer, tokens: str,
               max_new_tokens, progress=None) -> tuple[str, pd.DataFrame]:
    """Read cells of the session's grid with another model (or another layer of the same one)
    through an affine map fitted on shared text; beside each, the source model's own reading."""
    grid = session.require_grid()
    ex = registry.get(session.model)
    reader = validate.as_text("reader model", reader, 500)
    la = _as_int("source layer", source_layer)
    if not 0 <= la <= grid.n_layers:
        raise InputError(f"The source layer must be from 0 to {grid.n_layers}.")
    tokens = validate.as_text("token positions", tokens, 500)
    if not tokens.strip():
        positions = list(range(grid.n_tokens))
    else:
        try:
            positions = [int(x) for x in str(tokens).replace(" ", "").split(",") if x]
        except ValueError as e:
            raise InputError("Tokens are positions separated by commas, e.g. 3,5,7 (empty: the whole row).") from e
    bad = [t for t in positions if not 0 <= t < grid.n_tokens]
    if bad or not positions:
        raise InputError(f"Token positions must be from 0 to {grid.n_tokens - 1}; got {bad or 'none'}.")
    positions = list(dict.fromkeys(positions))
    if len(positions) > MAX_CROSS_TOKENS:
        raise InputError(f"Read at most {MAX_CROSS_TOKENS} tokens at once; name them, e.g. 3,5,7.")
    if progress is not None:
        progress(0.1, desc=f"running the shared text through {session.model} and {reader or 'the reader'}")
    cr = registry.cross_reader(session.model, reader)
    n_b = cr.lm_b.n_layers
    reader_layer = validate.as_text("reader layer", reader_layer, 20)
    lb = (round(la * n_b / grid.n_layers) if not reader_layer.strip() else _as_int("reader layer", reader_layer))
    mapping = cr.map(la, lb)
    mn = _as_int("max new tokens", max_new_tokens, 1, 64)
    reader_ex = registry.get(reader)
    own_settings = ex.settings(max_new_tokens=mn)
    read_settings = reader_ex.settings(max_new_tokens=mn)
    if progress is not None:
        progress(0.4, desc=f"reading {len(positions)} states")
    with session.job_context(ex.lm):
        own = ex.interpret(grid, [(la, t) for t in positions], settings=own_settings, batch_size=16, relevancy=False)
        _, across = cr.read(grid.hidden[la, positions], la, lb, read_settings, reader_ex.interpreter)
    rows = []
    for t, text in zip(positions, across):
        cell = own.get(la, t)
        rows.append({"token": t, "token_text": grid.tokens[t], f"{session.model} reads (layer {la})":
                     cell.interpretation if cell else "", f"{reader} reads (layer {lb}, mapped)": text})
    summary = (f"Affine map from layer {la} of **{html.escape(session.model)}** to layer {lb} of "
               f"**{html.escape(reader)}**, fitted by least "
               f"squares on {cr.n_tokens} tokens of shared text: R² {mapping.r2_train:.2f} on the fitting tokens, "
               f"**{mapping.r2_heldout:.2f} on held-out tokens** (how much of the reader's state the map recovers; "
               "readings through a map with low R² say little). Your grid's states and both readings use "
               f"{html.escape(session.model_state.describe())}; the map itself is fitted on the stock models.")
    return summary, pd.DataFrame(rows)


def build_cross_tab(registry: ModelRegistry, session: gr.State, user_error) -> None:
    gr.Markdown("Read your grid's states with **another model** (or another layer of the same one): the states "
                "are carried into the reader's space by an affine map fitted by least squares on shared text, "
                "then the reader interprets them with SelfIE. Both models must share a tokenizer. Run a prompt in "
                "the Explore tab first.")
    with gr.Row():
        reader = gr.Dropdown(MODEL_PRESETS if registry.config.allow_any_model else [registry.config.default_model],
                             value=registry.config.default_model, label="Reader model",
                             allow_custom_value=registry.config.allow_any_model)
        source_layer = gr.Number(10, precision=0, label="Source layer (your grid)")
        # Default: a later layer of the same model (the same layer would map a state onto itself).
        reader_layer = gr.Textbox("14", label="Reader layer (empty: same relative depth)",
                                  info="source layer 10 read at layer 14: what four more blocks make of it")
        tokens = gr.Textbox("", label="Token positions (empty: the whole row)", elem_id="sx-cross-tokens")
        max_new = gr.Slider(4, 32, value=12, step=1, label="Max new tokens")
    run = gr.Button("Fit the map and read", variant="primary", elem_id="sx-cross-run")
    summary = gr.Markdown(elem_id="sx-cross-summary")
    table = gr.Dataframe(headers=["token", "token_text", "source model reads", "reader reads (mapped)"], wrap=True,
                         elem_id="sx-cross-table")

    def on_cross(sess: Session, rd, la, lb, tk, mn, progress=gr.Progress()):
        try:
            for out in _study_job(registry, lambda: cross_read(registry, sess, rd, la, lb, tk, mn, progress)):
                yield (gr.skip(), gr.skip()) if out is None else out
        except Exception as e:
            raise user_error(e) from None

    run.click(on_cross, [session, reader, source_layer, reader_layer, tokens, max_new], [summary, table],
              concurrency_id="study", concurrency_limit=1)
