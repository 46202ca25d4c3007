"""``spaces.GPU`` on Hugging Face ZeroGPU Spaces; a no-op everywhere else.

Wrap only pure computations (see ``explorer.ui.zerogpu``): never a handler that takes a session.
"""

from __future__ import annotations

from explorer.ui.zerogpu import on_gpu as gpu

__all__ = ["gpu"]
