"""Methods built on the engine: other lenses and colour modes, compare, cross-model, evaluation, control."""
