"""Control: edit one block's MLP (supervised, reinforcement) or steer along a concept difference."""

from explorer.methods.control.checks import DEFAULT_TEST_PROMPTS, RETENTION_FACTS, compare_answers, retention
from explorer.methods.control.edit import (
    CONCEPT_CONTEXT,
    REFERENCE_TEXT,
    Edit,
    TrainSettings,
    applied,
    check_edit,
    check_layer,
    concept_grid,
    concept_state,
    mlp_io,
    private_mlp,
)
from explorer.methods.control.reinforcement import Judge, ReinforcementResult, reinforcement_control
from explorer.methods.control.steering import steer, steering_vector
from explorer.methods.control.supervised import SupervisedResult, supervised_control

__all__ = [
    "CONCEPT_CONTEXT", "DEFAULT_TEST_PROMPTS", "REFERENCE_TEXT", "RETENTION_FACTS", "Edit", "Judge",
    "ReinforcementResult", "SupervisedResult", "TrainSettings", "applied", "check_edit", "check_layer",
    "compare_answers", "concept_grid", "concept_state", "mlp_io", "private_mlp", "reinforcement_control",
    "retention", "steer", "steering_vector", "supervised_control",
]
