"""Geometry of each block (SplineLLM): MLP spline regions and attention's intrinsic dimension per cell,
per-prompt features, and a linear probe on them (docs/geometry.md)."""

from explorer.methods.geometry import colour as _colour  # noqa: F401  registers the grid colour modes
