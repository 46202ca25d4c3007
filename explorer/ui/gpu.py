"""``spaces.GPU`` on Hugging Face ZeroGPU Spaces; a no-op everywhere else."""

from __future__ import annotations

import os
from collections.abc import Callable


def gpu(fn: Callable) -> Callable:
    """Run ``fn`` on a ZeroGPU worker when the Space has one (``SPACES_ZERO_GPU`` is set)."""
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces

            return spaces.GPU(duration=120)(fn)
        except ImportError:
            return fn
    return fn
