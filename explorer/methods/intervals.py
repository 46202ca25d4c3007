"""How far a measured proportion can be trusted: the Wilson score interval.

A probe's held-out accuracy is a proportion k/n measured on n held-out prompts. With few prompts it
swings a lot from one split to another (4 held-out prompts can only give 0.5, 0.75 or 1.0); the
Wilson interval says how wide that uncertainty is, and stays inside [0, 1] even at 0/n and n/n,
where the textbook normal interval collapses to a single point.
"""

from __future__ import annotations

import math

from explorer.core.errors import InputError

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal: a two-sided 95% interval
MIN_TRUSTED = 30  # fewer held-out examples than this: an accuracy is reported with a warning


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``n`` (default: 95%)."""
    if n <= 0:
        raise InputError("An interval needs at least one trial.")
    if not 0 <= successes <= n:
        raise InputError(f"Successes must be from 0 to n ({n}); got {successes}.")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
