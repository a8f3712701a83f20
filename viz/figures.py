"""Plotly figures: objective curves (one or several runs) with the natural-photo maximum for scale."""

from __future__ import annotations

from collections.abc import Sequence

# plotly looks pandas up in sys.modules without importing it; two sessions drawing their first chart at once
# then see a half-initialised pandas (AttributeError: ... no attribute 'Series'). Import it whole, here, first.
import pandas  # noqa: F401
import plotly.graph_objects as go


def curve_figure(curves: dict[str, tuple[Sequence[int], Sequence[float]]], natural: float | None = None,
                 title: str = "", height: int = 280) -> go.Figure:
    """``curves``: label -> (steps, objective values)."""
    fig = go.Figure()
    for label, (steps, values) in curves.items():
        fig.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines", name=label))
    if natural is not None:
        # mid-grey: visible on the light and the dark theme alike
        fig.add_hline(y=natural, line_dash="dot", line_color="#8c8c8c", line_width=2,
                      annotation_text="best photo position", annotation_position="bottom right",
                      annotation_font_color="#8c8c8c")
    fig.update_layout(title=title or None, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis_title="step", yaxis_title="channel activation", legend=dict(orientation="h", y=1.1))
    return fig
