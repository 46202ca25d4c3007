"""The Concepts tab: teach a concept from examples, see where the model holds it, steer it (GCAV).

Concepts and their steering live in the user's ``Session`` (``session.concepts``,
``session.concept_steer``); ``Session.job_context`` applies the steering to that session's grids
and readings only, and the banner above the tabs names it. A trained concept joins Explore's colour
menu; colouring by it colours the Explore grid of the current prompt (or, for a typed prompt, that
prompt's own grid here, leaving Explore as it is). A probe's held-out accuracy is shown with its
chance level and a 95% interval, with a warning when the held-out set is too small to trust. The
logic lives in ``explorer.methods.concepts``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from explorer.core.errors import InputError
from explorer.core.generation import greedy_text
from explorer.interpret.engine import make_settings
from explorer.methods.concepts import (
    Concept,
    Steering,
    StepLog,
    from_lists,
    load_file,
    load_with_extra,
    p0_from_strength,
)
from explorer.methods.concepts.concept import file_stem
from explorer.methods.concepts.dataset import MIN_PER_SIDE
from explorer.methods.concepts.gcav import check_layers
from explorer.methods.concepts.probe import PROBE_KINDS
from explorer.methods.concepts.reviews import named_set, set_names
from explorer.methods.control import applied
from explorer.methods.intervals import MIN_TRUSTED, wilson_interval
from explorer.ui import edits, grid_view, validate
from explorer.ui.background import stream_callbacks
from explorer.ui.errors import inline
from explorer.ui.explore import _as_float, _as_int, figure_for
from explorer.ui.grid_plot import GridPlot, figure_value
from explorer.ui.session import ModelRegistry, Session
from explorer.viz.figure import MAX_COLUMNS, column_window, grid_figure

SOURCES = ["shipped set", "type prompts", "upload CSV/JSONL"]
MIN_TYPED = MIN_PER_SIDE + 2  # typed prompts per side: every 4th is held out, and each side needs 2 held out


def held_out(concept: Concept) -> tuple[int, int]:
    """How many held-out prompts scored the probes, with the concept and without it (0, 0 if unknown)."""
    data = (concept.meta or {}).get("data") or {}
    try:
        return int(data.get("test_pos") or 0), int(data.get("test_neg") or 0)
    except (TypeError, ValueError):
        return 0, 0


def trust_line(concept: Concept, layer: int) -> str:
    """The probe's held-out accuracy at ``layer`` with its chance level and 95% interval, and a warning when
    the held-out set is too small to trust it."""
    pos, neg = held_out(concept)
    n = pos + neg
    acc = concept.probe(layer).accuracy
    if n == 0:
        return f"Held-out accuracy at layer {layer}: {acc:.2f} (the number of held-out prompts is not recorded)."
    lo, hi = wilson_interval(round(acc * n), n)
    chance = max(pos, neg) / n
    line = (f"Held-out accuracy at layer {layer}: **{acc:.2f}**, 95% interval {lo:.2f}–{hi:.2f} on {n} held-out "
            f"prompts ({pos} with, {neg} without); chance level {chance:.2f}.")
    if n < MIN_TRUSTED:
        line += (f" <span class='sx-warn' role='alert'>⚠ Only {n} held-out prompts: too few to trust this accuracy "
                 f"(anything from {lo:.2f} to {hi:.2f} fits). Every 4th example of each side is held out: give "
                 f"about {MIN_TRUSTED * 2} per side for at least {MIN_TRUSTED} held-out prompts.</span>")
    return line


def curve_figure(concept: Concept):
    import plotly.graph_objects as go

    cur = concept.curve()
    best = concept.best_layers(3)
    pos, neg = held_out(concept)
    n = pos + neg
    acc = cur.accuracy.tolist()
    bars = [wilson_interval(round(a * n), n) if n else (a, a) for a in acc]
    error = {"type": "data", "symmetric": False, "array": [hi - a for a, (_, hi) in zip(acc, bars)],
             "arrayminus": [a - lo for a, (lo, _) in zip(acc, bars)], "thickness": 1, "width": 2}
    data = [
        {"type": "scatter", "mode": "lines+markers", "x": cur.layer.tolist(), "y": acc,
         "name": "held-out accuracy (95% interval)", "error_y": error},
        {"type": "scatter", "mode": "lines+markers", "x": cur.layer.tolist(), "y": cur.auc.tolist(), "name": "ROC-AUC"},
        {"type": "scatter", "mode": "markers", "x": best, "y": [concept.probe(r).accuracy for r in best],
         "name": "most accurate", "marker": {"size": 12, "symbol": "star"}}]
    if n:
        chance = max(pos, neg) / n
        data.append({"type": "scatter", "mode": "lines", "x": [cur.layer.min(), cur.layer.max()],
                     "y": [chance, chance], "name": f"chance ({chance:.2f})", "line": {"dash": "dash", "color": "#6b7280"}})
    return go.Figure({"data": data, "layout": {
        "title": {"text": f"'{concept.name}' probes by layer ({n} held-out prompts)"}, "height": 300,
        "margin": {"l": 50, "r": 10, "t": 40, "b": 40}, "xaxis": {"title": {"text": "layer"}},
        "yaxis": {"title": {"text": "score"}, "range": [0.0, 1.05]}}})


def examples(source: str, set_name: str, name: str, positive: str, negative: str, file):
    """The concept's examples from the chosen source."""
    if source == "shipped set":
        if set_name not in set_names():
            raise InputError(f"Choose one of the shipped sets: {', '.join(set_names())}.")
        return named_set(set_name)
    if source == "type prompts":
        lines = [ln for ln in (positive or "").splitlines() if ln.strip()]
        others = [ln for ln in (negative or "").splitlines() if ln.strip()]
        return from_lists((name or "").strip() or "my concept", lines, others)
    if file is None:
        raise InputError("Upload a CSV or JSONL file with text and label columns first.")
    path = file if isinstance(file, str) else getattr(file, "name", str(file))
    return load_file(path, (name or "").strip() or None)


def readings_md(registry: ModelRegistry, session: Session, concept: Concept) -> str:
    """SelfIE readings of the CAV at the most accurate rows (scaled to the typical state norm)."""
    ex = registry.get(session.model)
    settings = make_settings(ex.lm, "refers_to", max_new_tokens=12)
    with session.job_context(ex.lm):
        texts = concept.read(ex.interpreter, settings)
    rows = "\n".join(f"- layer **{r}** (accuracy {concept.probe(r).accuracy:.2f}): *{html.escape(t)}*"
                     for r, t in texts.items())
    return f"**What the CAV says, read by SelfIE:**\n\n{rows}"


def train(registry: ModelRegistry, session: Session, source, set_name, name, positive, negative, file, pooling,
          progress=None, probe: str = "logistic"):
    """Generator: (curve, readings, status, concept menu, the "also steer" list, Explore's colour menu) while
    capturing states and at the end."""
    ex = registry.get(session.model)
    if probe not in PROBE_KINDS:
        raise InputError(f"Choose a probe: {' or '.join(PROBE_KINDS)}.")
    data = examples(source, set_name, name, positive, negative, file)
    concept = None
    with session.job() as stop:
        run = lambda cb: Concept.train(ex.lm, data, pooling=pooling, progress=cb,  # noqa: E731
                                       should_stop=stop.is_set, probe=probe)
        for kind, value in stream_callbacks(run, context=lambda: session.job_context(ex.lm)):
            if kind == "step":
                done, total = value
                if progress is not None:
                    progress((done, total), desc=f"capturing states {done}/{total}")
                yield (gr.skip(), gr.skip(), f"Training '{data.name}': states of {done}/{total} prompts…", gr.skip(),
                       gr.skip(), gr.skip())
            else:
                concept = value
    session.concepts[concept.name] = concept
    best = concept.best_layers(3)
    status = (f"Trained **{concept.name}** on {len(data.texts)} prompts × {len(concept.layers)} layers in "
              f"{concept.meta['capture_s'] + concept.meta['fit_s']:.1f} s. Most accurate layers: {best}. "
              f"{trust_line(concept, best[0])} It is now in Explore's colour menu.")
    menu = gr.update(choices=list(session.concepts), value=concept.name)
    others = gr.update(choices=list(session.concepts))
    explore_menu = gr.update(choices=grid_view.colour_menu(session))
    yield curve_figure(concept), "Reading the CAV…", status, menu, others, explore_menu
    yield curve_figure(concept), readings_md(registry, session, concept), status, menu, others, explore_menu


def pick(session: Session, name: str) -> Concept:
    if not name or name not in session.concepts:
        raise InputError("Train or load a concept first.")
    return session.concepts[name]


def colour(registry: ModelRegistry, session: Session, name: str, prompt: str):
    """Colour by the concept: with a typed prompt, that prompt's own grid here (Explore is left as it is);
    blank, the Explore grid of the current prompt, whose colour menu then shows the concept.

    Returns (this tab's grid, message, Explore's grid, Explore's colour menu, Explore's colour help)."""
    concept = pick(session, name)
    ex = registry.get(session.model)
    mode = grid_view.concept_mode(concept.name)
    if prompt and prompt.strip():
        text = validate.as_prompt(prompt, registry.config.max_prompt_tokens)
        with session.job_context(ex.lm):
            grid = ex.run(text)
        cols = column_window(grid, 0, MAX_COLUMNS)
        fig = grid_figure(grid, concept.colour(grid, cols), None, cols)
        return (figure_value(fig), f"This prompt's grid, coloured by P({html.escape(concept.name)}); hover a cell "
                "for its probability. The Explore grid is unchanged.", gr.skip(), gr.skip(), gr.skip())
    if session.grid is None:
        raise InputError("Run a prompt in the Explore tab first (or type one here to colour its own grid).")
    session.colour_mode = mode
    fig = figure_value(figure_for(ex, session))
    return (fig, f"The Explore grid ({html.escape(repr(session.grid.prompt))}) is coloured by "
                 f"P({html.escape(concept.name)}); hover a cell for its probability.", fig,
            gr.update(choices=grid_view.colour_menu(session), value=mode), grid_view.colour_help(session))


def steering_of(lm, session: Session, name: str, mode: str, scale: str, k, p0, layers: str,
                also=None, also_mode: str = "remove", also_p0=0.5) -> Steering:
    """The session's steering from the tab's fields: the main concept, and any others held (or moved)
    at ``also_p0`` at the same rows (several concepts: the SLSQP step of every target at once)."""
    concept = pick(session, name)
    target = p0_from_strength(_as_float(k), mode) if scale == "strength k" else _as_float(p0)
    rows = [_as_int("layer", x) for x in (layers or "").split(",") if x.strip()] or concept.default_layers()
    concept.target(mode, target)  # validates p0
    if also is not None and not isinstance(also, (list, tuple)):
        raise InputError("Choose the other concepts from the list.")
    extra = [pick(session, str(n)) for n in (also or []) if n and n != concept.name]
    p_also = _as_float(also_p0) if extra else 0.5
    for c in extra:
        c.target(also_mode, p_also)
    check_layers(lm, rows, [c.probes for c in (concept, *extra)])
    return Steering((concept, *extra), (mode, *[also_mode] * len(extra)), (target, *[p_also] * len(extra)),
                    tuple(rows))


def steer(registry: ModelRegistry, session: Session, name, mode, scale, k, p0, layers, prompt, n_tokens, alpha,
          also=None, also_mode="remove", also_p0=0.5):
    """Apply GCAV to the session; before / GCAV / fixed generations and the eps per step."""
    lm = registry.get(session.model).lm
    steering = steering_of(lm, session, name, mode, scale, k, p0, layers, also, also_mode, also_p0)
    n = _as_int("max new tokens", n_tokens)
    if not 1 <= n <= 100:
        raise InputError("Max new tokens must be from 1 to 100.")
    if not prompt or not prompt.strip():
        raise InputError("The prompt is empty: type a text to continue.")
    fixed = Steering(steering.concepts, steering.modes, steering.p0s, steering.layers, "fixed", _as_float(alpha))
    with applied(lm, session.edit):
        before = greedy_text(lm, prompt, max_new_tokens=n, chat=False)
        log = StepLog()
        with steering.context(lm, log):
            after = greedy_text(lm, prompt, max_new_tokens=n, chat=False)
        with fixed.context(lm):
            fixed_text = greedy_text(lm, prompt, max_new_tokens=n, chat=False)
    names = [c.name for c in steering.concepts]
    eps = pd.DataFrame([{"layer": r["layer"], "step": r["step"],
                         **{f"eps {n} (last token)": round(e[0], 3) for n, e in zip(names, r["eps"])},
                         "largest step / typical norm": round(r.get("max_ratio", 0.0), 3),
                         "states moved": r["moved"], "positions": r["positions"]} for r in log.records()])
    session.set_model_state(session.model_state.with_steering(steering), lm)
    return (before, after, fixed_text, eps,
            f"{edits.steer_status(session)} The largest step was {log.largest_ratio():.2f} of the typical state norm.")


def save(session: Session, name: str):
    concept = pick(session, name)
    extra = {}
    steer = session.concept_steer
    if isinstance(steer, Steering) and steer.concepts[0] is concept:
        extra = {"steer": {"mode": steer.modes[0], "p0": steer.p0s[0], "layers": list(steer.layers)}}
    path = concept.save(session.workdir() / f"concept-{file_stem(concept.name)}.safetensors", extra)
    return gr.update(value=str(path), visible=True)


def load(registry: ModelRegistry, session: Session, file):
    if file is None:
        raise InputError("No file was uploaded.")
    path = file if isinstance(file, str) else getattr(file, "name", str(file))
    lm = registry.get(session.model).lm
    concept, extra = load_with_extra(path, lm)
    session.concepts[concept.name] = concept
    status = f"Loaded **{concept.name}** ({len(concept.layers)} layers); it is now in Explore's colour menu."
    if "steer" in extra:  # already checked like typed input when the file was read
        s = extra["steer"]
        steering = Steering((concept,), (s["mode"],), (float(s["p0"]),), tuple(s["layers"]))
        session.set_model_state(session.model_state.with_steering(steering), lm)
        status += f" Its steering is applied: {steering.describe()}."
    return (curve_figure(concept), status, gr.update(choices=list(session.concepts), value=concept.name),
            gr.update(choices=list(session.concepts)), gr.update(choices=grid_view.colour_menu(session)))


@dataclass
class ConceptWidgets:
    """What other parts of the page read or update: the steering status line (its change redraws the banner
    and the Explore grid) and the concept menu."""

    steer_status: gr.Markdown
    concept_pick: gr.Dropdown


def build_concept_tab(registry: ModelRegistry, session: gr.State, explore_widgets) -> ConceptWidgets:
    """Widgets and wiring of the Concepts tab (inside a ``gr.Blocks``); long because it is only layout
    and event wiring, the logic is in the functions above. Failures show in the message line beside the
    action (training, colouring, steering)."""
    w = explore_widgets
    gr.Markdown("Teach the model's explorer a concept from examples: one probe per layer finds where the model "
                "holds it; colour the grid by it; read its direction in words; and steer it to a target "
                "probability with GCAV (per sample, per step, only as much as each state needs).")
    with gr.Row():
        source = gr.Radio(SOURCES, value="shipped set", label="Examples", elem_id="sx-c-source")
        set_name = gr.Dropdown(set_names(), value="negative_sentiment", label="Shipped set ('reviews': real reviews)",
                               elem_id="sx-c-set")
        name = gr.Textbox("", label="Concept name (typed/uploaded)", elem_id="sx-c-name")
        pooling = gr.Radio(["last", "mean"], value="last", label="State (last token or mean)")
        probe_kind = gr.Radio(list(PROBE_KINDS), value="logistic", label="Probe", elem_id="sx-c-probe",
                              info="logistic: calibrated; mean-difference: moves text more when steering")
    with gr.Row():
        positive = gr.Textbox(lines=4, label=f"Prompts WITH the concept (one per line, at least {MIN_TYPED}: "
                              f"{MIN_PER_SIDE} to train, 2 held out)", elem_id="sx-c-pos")
        negative = gr.Textbox(lines=4, label=f"Prompts WITHOUT it (one per line, at least {MIN_TYPED})",
                              elem_id="sx-c-neg")
        upload = gr.File(label="CSV/JSONL: text, label (1/0), optional split", file_types=[".csv", ".jsonl"])
    with gr.Row():
        train_btn = gr.Button("Train concept", variant="primary", elem_id="sx-c-train")
        stop_btn = gr.Button("Stop", variant="stop")
    status = gr.Markdown("No concept yet.", elem_id="sx-c-status", elem_classes=["sx-msg"])
    with gr.Row():
        curve = gr.Plot(label="Accuracy and AUC by layer", elem_id="sx-c-curve")
        readings = gr.Markdown("", elem_id="sx-c-readings")
    with gr.Row():
        concept_pick = gr.Dropdown([], label="Concept", elem_id="sx-c-pick", allow_custom_value=True)
        colour_prompt = gr.Textbox("", label="Prompt to colour (blank: the Explore grid of its current prompt)",
                                   placeholder="The food was cold and the waiter was rude, but the view was lovely.",
                                   scale=3, elem_id="sx-c-cprompt")
        colour_btn = gr.Button("Colour the grid by the concept", elem_id="sx-c-colour")
    colour_msg = gr.Markdown("", elem_id="sx-c-colour-msg", elem_classes=["sx-msg"])
    grid_plot = GridPlot(elem_id="sx-c-grid")
    with gr.Row():
        mode = gr.Radio(["remove", "add"], value="remove", label="Steer", elem_id="sx-c-mode")
        scale = gr.Radio(["strength k", "p0"], value="strength k", label="Target as")
        k = gr.Slider(0.5, 6, value=2, step=0.5, label="k: p0 = 10^-k (remove) or 1-10^-k (add)")
        p0 = gr.Number(0.01, label="p0")
        layers = gr.Textbox("", label="Layers (blank: the saved choice, else the 3 most accurate)",
                            elem_id="sx-c-layers")
    with gr.Row():
        also = gr.CheckboxGroup([], label="Also steer these concepts (several at once)", elem_id="sx-c-also")
        also_mode = gr.Radio(["remove", "add"], value="remove", label="Them: keep at most p0 (remove) or at least",
                             elem_id="sx-c-also-mode")
        also_p0 = gr.Number(0.5, label="Their p0", elem_id="sx-c-also-p0")
    with gr.Row():
        prompt = gr.Textbox("The hotel room was dirty and the staff were", label="Prompt to continue", scale=3,
                            elem_id="sx-c-prompt")
        n_tokens = gr.Number(20, label="Max new tokens", precision=0, elem_id="sx-c-ntokens")
        alpha = gr.Number(0.5, label="Fixed comparison: alpha (typical norms)")
    with gr.Row():
        steer_btn = gr.Button("Steer (GCAV)", variant="primary", elem_id="sx-c-steer")
        revert_btn = gr.Button("Revert", variant="stop", elem_id="sx-c-revert")
        save_btn = gr.Button("Save concept")
        save_file = gr.DownloadButton("Download concept", visible=False)
        load_btn = gr.UploadButton("Load concept (.safetensors)", file_types=[".safetensors"])
    steer_status = gr.Markdown("No concept steering applied.", elem_id="sx-c-steer-status", elem_classes=["sx-msg"])
    with gr.Row():
        before = gr.Textbox(label="Before", elem_id="sx-c-before")
        after = gr.Textbox(label="After (GCAV)", elem_id="sx-c-after")
        fixed_out = gr.Textbox(label="Fixed-coefficient comparison", elem_id="sx-c-fixed")
    eps = gr.Dataframe(label="eps applied per step", elem_id="sx-c-eps")

    def on_train(sess, src, sn, nm, pos, neg, f, pool, kind, request: gr.Request, progress=gr.Progress()):
        registry.bind(getattr(request, "session_hash", None), sess)
        yield from train(registry, sess, src, sn, nm, pos, neg, f, pool, progress, kind)

    def on_stop(sess: Session) -> None:
        sess.stop_jobs()

    def on_revert(sess: Session) -> str:
        sess.set_model_state(sess.model_state.with_steering(None), registry.get(sess.model).lm)
        return "Reverted: no concept steering in your session."

    private = {"api_visibility": "private"}
    train_btn.click(inline(on_train, 6, 2), [session, source, set_name, name, positive, negative, upload, pooling,
                                             probe_kind],
                    [curve, readings, status, concept_pick, also, w.colour], concurrency_id="concepts",
                    concurrency_limit=2, **private)
    stop_btn.click(on_stop, [session], None, queue=False)
    colour_btn.click(inline(lambda s, n, p: colour(registry, s, n, p), 5, 1), [session, concept_pick, colour_prompt],
                     [grid_plot, colour_msg, w.grid_plot, w.colour, w.colour_help], concurrency_id="concepts",
                     concurrency_limit=2, **private)
    steer_btn.click(inline(lambda s, *a: steer(registry, s, *a), 5, 4),
                    [session, concept_pick, mode, scale, k, p0, layers, prompt, n_tokens, alpha, also, also_mode,
                     also_p0],
                    [before, after, fixed_out, eps, steer_status], concurrency_id="concepts", concurrency_limit=2,
                    **private)
    revert_btn.click(inline(on_revert, 1, 0), [session], [steer_status], **private)
    save_btn.click(inline(lambda s, n: (save(s, n), gr.skip()), 2, 1), [session, concept_pick],
                   [save_file, steer_status], **private)
    load_btn.upload(inline(lambda s, f: load(registry, s, f), 5, 1), [session, load_btn],
                    [curve, steer_status, concept_pick, also, w.colour], **private)
    return ConceptWidgets(steer_status, concept_pick)
