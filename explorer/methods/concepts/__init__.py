"""Concepts: probes per layer, concept activation vectors, grid colouring and GCAV steering."""

from explorer.methods.concepts.concept import Concept, Steering, load_with_extra
from explorer.methods.concepts.dataset import (
    ConceptData,
    from_lists,
    from_records,
    load_file,
    negative_openings,
    shipped,
    shipped_names,
)
from explorer.methods.concepts.gcav import (
    StepLog,
    Target,
    closed_form,
    fixed,
    gcav,
    gcav_step,
    p0_from_strength,
    slsqp,
    target_logit,
)
from explorer.methods.concepts.probe import Probe, collect_states, fit_probe, prompt_states, train_probes

__all__ = [
    "Concept", "ConceptData", "Probe", "Steering", "StepLog", "Target", "closed_form", "collect_states", "fit_probe",
    "fixed",
    "from_lists", "from_records", "gcav", "gcav_step", "load_file", "load_with_extra", "negative_openings",
    "p0_from_strength", "prompt_states", "shipped", "shipped_names", "slsqp", "target_logit", "train_probes",
]
