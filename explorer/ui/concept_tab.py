"""The Concepts tab: teach a concept from examples, see where the model holds it, steer it (GCAV).

Concepts and their steering live in the user's ``Session`` (``session.concepts``,
``session.concept_steer``); ``Session.job_context`` applies the steering to that session's grids
and readings only. The logic lives in ``explorer.methods.concepts``.
"""

from __future__ import annotations

import html

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
from explorer.methods.concepts.gcav import check_layers
from explorer.methods.concepts.probe import PROBE_KINDS
from explorer.methods.concepts.reviews import named_set, set_names
from explorer.methods.control import applied
from explorer.ui.background import stream_callbacks
from explorer.ui.errors import friendly
from explorer.ui.explore import _as_float, _as_int, figure_for, run_prompt
from explorer.ui.grid_plot import GridPlot, figure_value
from explorer.ui.session import ModelRegistry, Session

SOURCES = ["shipped set", "type prompts", "upload CSV/JSONL"]


def curve_figure(concept: Concept):
    import plotly.graph_objects as go

    cur = concept.curve()
    best = concept.best_layers(3)
    return go.Figure({"data": [
        {"type": "scatter", "mode": "lines+markers", "x": cur.layer.tolist(), "y": cur.accuracy.tolist(),
         "name": "held-out accuracy"},
        {"type": "scatter", "mode": "lines+markers", "x": cur.layer.tolist(), "y": cur.auc.tolist(), "name": "ROC-AUC"},
        {"type": "scatter", "mode": "markers", "x": best, "y": [concept.probe(r).accuracy for r in best],
         "name": "most accurate", "marker": {"size": 12, "symbol": "star"}}],
        "layout": {"title": {"text": f"'{concept.name}' probes by layer"}, "height": 300,
                   "margin": {"l": 50, "r": 10, "t": 40, "b": 40}, "xaxis": {"title": {"text": "layer"}},
                   "yaxis": {"title": {"text": "score"}, "range": [0.4, 1.02]}}})


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
    """Generator: (curve, readings, status, concept menu) while capturing states and at the end."""
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
                       gr.skip())
            else:
                concept = value
    session.concepts[concept.name] = concept
    best = concept.best_layers(3)
    status = (f"Trained **{concept.name}** on {len(data.texts)} prompts × {len(concept.layers)} layers in "
              f"{concept.meta['capture_s'] + concept.meta['fit_s']:.1f} s. Most accurate layers: {best} "
              f"(accuracy {concept.probe(best[0]).accuracy:.2f}).")
    menu = gr.update(choices=list(session.concepts), value=concept.name)
    others = gr.update(choices=list(session.concepts))
    yield curve_figure(concept), "Reading the CAV…", status, menu, others
    yield curve_figure(concept), readings_md(registry, session, concept), status, menu, others


def pick(session: Session, name: str) -> Concept:
    if not name or name not in session.concepts:
        raise InputError("Train or load a concept first.")
    return session.concepts[name]


def colour(registry: ModelRegistry, session: Session, name: str, prompt: str):
    """Colour the Explore grid by the concept (running ``prompt`` first if given)."""
    concept = pick(session, name)
    session.colour_mode = f"concept: {concept.name}"
    if prompt and prompt.strip():
        view = run_prompt(registry, session, session.model, prompt, False)
        fig = view.figure
    else:
        if session.grid is None:
            raise InputError("Type a prompt to colour, or run one in the Explore tab first.")
        fig = figure_for(registry.get(session.model), session)
    return figure_value(fig), f"The grid is coloured by P({concept.name}); hover a cell for its probability."


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
    session.concept_steer = steering
    status = (f"{steering.describe()} is now applied to your session only (grids and readings see it); the largest "
              f"step was {log.largest_ratio():.2f} of the typical state norm. Revert removes it.")
    return before, after, fixed_text, eps, status


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
    concept, extra = load_with_extra(path, registry.get(session.model).lm)
    session.concepts[concept.name] = concept
    status = f"Loaded **{concept.name}** ({len(concept.layers)} layers)."
    if "steer" in extra:  # already checked like typed input when the file was read
        s = extra["steer"]
        session.concept_steer = Steering((concept,), (s["mode"],), (float(s["p0"]),), tuple(s["layers"]))
        status += f" Its steering is applied: {session.concept_steer.describe()}."
    return (curve_figure(concept), status, gr.update(choices=list(session.concepts), value=concept.name),
            gr.update(choices=list(session.concepts)))


def build_concept_tab(registry: ModelRegistry, session: gr.State) -> None:
    """Widgets and wiring of the Concepts tab (inside a ``gr.Blocks``); long because it is only layout
    and event wiring, the logic is in the functions above."""
    gr.Markdown("Teach the model's explorer a concept from examples: one probe per layer finds where the model "
                "holds it; colour the grid by it; read its direction in words; and steer it to a target "
                "probability with GCAV (per sample, per step, only as much as each state needs).")
    with gr.Row():
        source = gr.Radio(SOURCES, value="shipped set", label="Examples", elem_id="sx-c-source")
        set_name = gr.Dropdown(set_names(), value="negative_sentiment", label="Shipped set ('reviews': real reviews)",
                               elem_id="sx-c-set")
        name = gr.Textbox("", label="Concept name (typed/uploaded)")
        pooling = gr.Radio(["last", "mean"], value="last", label="State (last token or mean)")
        probe_kind = gr.Radio(list(PROBE_KINDS), value="logistic", label="Probe", elem_id="sx-c-probe",
                              info="logistic: calibrated; mean-difference: moves text more when steering")
    with gr.Row():
        positive = gr.Textbox(lines=4, label="Prompts WITH the concept (one per line, >= 8)")
        negative = gr.Textbox(lines=4, label="Prompts WITHOUT it (one per line, >= 8)")
        upload = gr.File(label="CSV/JSONL: text, label (1/0), optional split", file_types=[".csv", ".jsonl"])
    with gr.Row():
        train_btn = gr.Button("Train concept", variant="primary", elem_id="sx-c-train")
        stop_btn = gr.Button("Stop", variant="stop")
    status = gr.Markdown("No concept yet.", elem_id="sx-c-status")
    with gr.Row():
        curve = gr.Plot(label="Accuracy and AUC by layer", elem_id="sx-c-curve")
        readings = gr.Markdown("", elem_id="sx-c-readings")
    with gr.Row():
        concept_pick = gr.Dropdown([], label="Concept", elem_id="sx-c-pick", allow_custom_value=True)
        colour_prompt = gr.Textbox("The food was cold and the waiter was rude, but the view was lovely.",
                                   label="Prompt to colour (blank: the Explore grid)", scale=3, elem_id="sx-c-cprompt")
        colour_btn = gr.Button("Colour the grid by the concept", elem_id="sx-c-colour")
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
        n_tokens = gr.Number(20, label="Max new tokens", precision=0)
        alpha = gr.Number(0.5, label="Fixed comparison: alpha (typical norms)")
    with gr.Row():
        steer_btn = gr.Button("Steer (GCAV)", variant="primary", elem_id="sx-c-steer")
        revert_btn = gr.Button("Revert", variant="stop", elem_id="sx-c-revert")
        save_btn = gr.Button("Save concept")
        save_file = gr.DownloadButton("Download concept", visible=False)
        load_btn = gr.UploadButton("Load concept (.safetensors)", file_types=[".safetensors"])
    with gr.Row():
        before = gr.Textbox(label="Before", elem_id="sx-c-before")
        after = gr.Textbox(label="After (GCAV)", elem_id="sx-c-after")
        fixed_out = gr.Textbox(label="Fixed-coefficient comparison", elem_id="sx-c-fixed")
    eps = gr.Dataframe(label="eps applied per step", elem_id="sx-c-eps")
    steer_status = gr.Markdown("No concept steering applied.", elem_id="sx-c-steer-status")

    def on_train(sess, src, sn, nm, pos, neg, f, pool, kind, request: gr.Request, progress=gr.Progress()):
        registry.bind(getattr(request, "session_hash", None), sess)
        yield from train(registry, sess, src, sn, nm, pos, neg, f, pool, progress, kind)

    def on_stop(sess: Session) -> None:
        sess.stop_jobs()

    def on_revert(sess: Session) -> str:
        sess.concept_steer = None
        return "Reverted: no concept steering in your session."

    train_btn.click(friendly(on_train), [session, source, set_name, name, positive, negative, upload, pooling,
                                         probe_kind],
                    [curve, readings, status, concept_pick, also], concurrency_id="concepts", concurrency_limit=2)
    stop_btn.click(on_stop, [session], None, queue=False)
    colour_btn.click(friendly(lambda s, n, p: colour(registry, s, n, p)), [session, concept_pick, colour_prompt],
                     [grid_plot, status], concurrency_id="concepts", concurrency_limit=2)
    steer_btn.click(friendly(lambda s, *a: steer(registry, s, *a)),
                    [session, concept_pick, mode, scale, k, p0, layers, prompt, n_tokens, alpha, also, also_mode,
                     also_p0],
                    [before, after, fixed_out, eps, steer_status], concurrency_id="concepts", concurrency_limit=2)
    revert_btn.click(on_revert, [session], [steer_status])
    save_btn.click(friendly(save), [session, concept_pick], [save_file])
    load_btn.upload(friendly(lambda s, f: load(registry, s, f)), [session, load_btn],
                    [curve, steer_status, concept_pick, also])
