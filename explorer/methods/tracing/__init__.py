"""Causal tracing (Meng et al. 2022, ROME): which states of the grid the answer depends on.

``trace(lm, prompt, answer, subject)`` corrupts the subject's embeddings with Gaussian noise and restores
each cell's clean state in turn; the result, :class:`CausalTrace`, is the grid of p(answer) regained.
Method and formulas: docs/tracing.md.
"""

from explorer.methods.tracing.colour import CAUSAL_MODE, diff_traces, trace_layer  # registers the colour mode
from explorer.methods.tracing.engine import TraceRun, embedding_std, prepare
from explorer.methods.tracing.inputs import TraceSettings, guess_subject, subject_positions
from explorer.methods.tracing.result import CausalTrace
from explorer.methods.tracing.tracer import setup, trace, trace_ids

__all__ = ["CAUSAL_MODE", "CausalTrace", "TraceRun", "TraceSettings", "diff_traces", "embedding_std", "guess_subject",
           "prepare", "setup", "subject_positions", "trace", "trace_ids", "trace_layer"]
