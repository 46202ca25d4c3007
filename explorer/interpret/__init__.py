"""The SelfIE engine: settings, the batched decoder, relevancy, the shared batcher and cache."""

from explorer.interpret.engine import Interpreter, auto_batch_size, collect
from explorer.interpret.settings import InterpretSettings, make_settings

__all__ = ["InterpretSettings", "Interpreter", "auto_batch_size", "collect", "make_settings"]
