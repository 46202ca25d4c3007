"""The model-agnostic core: loading, architecture lookup, hooks, prompts, grid capture, results.

Nothing here knows about interpretation methods, the web app or the command line.
"""
