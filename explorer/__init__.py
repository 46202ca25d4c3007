"""SelfIE Explorer: read and edit what a language model holds at every layer and token."""

__version__ = "0.1.0"

from explorer.errors import ExplorerError, InputError, ModelLoadError

__all__ = ["ExplorerError", "InputError", "ModelLoadError", "__version__"]
