"""Command-line tools: ``python -m explorer COMMAND`` (also installed as ``selfie-explorer``)."""
