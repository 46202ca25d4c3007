"""Figures: the grid heatmap and evaluation curves, as plain Plotly dicts or standalone HTML."""
