"""Plotly figures: objective curves (one or several runs) with the natural-photo maximum for scale."""

from __future__ import annotations

from collections.abc import Sequence

# plotly looks pandas up in sys.modules without importing it; two sessions drawing their first chart at once
# then see a half-initialised pandas (AttributeError: ... no attribute 'Series'). Import it whole, here, first.
import pandas  # noqa: F401
import plotly.graph_objects as go

from ..engine.methods import METHODS
from ..engine.optimize import octave_starts

NO_TOOLBAR = {"displayModeBar": False}  # plotly's toolbar covers a small chart (phones): the charts are for reading
OCTAVE_NOTE = ("Dotted lines: where the image grows to a finer scale (coarse to fine); the objective dips there "
               "while the new detail is fitted.")


def octave_marks(method: str, steps: int) -> dict[int, float]:
    """``{step: scale}`` where ``method``'s recipe starts each finer scale in a run of ``steps`` (none for an
    unknown method)."""
    recipe = METHODS.get(method)
    return {} if recipe is None or steps < 2 else {k: v for k, v in octave_starts(recipe.octaves, steps).items() if k}


def curve_figure(curves: dict[str, tuple[Sequence[int], Sequence[float]]], natural: float | None = None,
                 title: str = "", height: int = 280, y_title: str = "channel activation (mean)",
                 octaves: dict[int, float] | None = None) -> go.Figure:
    """``curves``: label -> (steps, objective values); ``y_title`` says what they measure (see
    :func:`viz.engine.views.curve_words`); ``natural``, in the same units, the best photo position's response;
    ``octaves`` (:func:`viz.engine.optimize.octave_starts`) marks where the image moved to a finer scale (the curve
    dips there while the new detail is fitted)."""
    fig = go.Figure()
    for step, scale in sorted((octaves or {}).items()):
        if step > 0:
            fig.add_vline(x=step + 1, line_dash="dot", line_color="#b0b0b0", line_width=1,
                          annotation_text=f"{scale:.0%} size" if scale < 1 else "full size",
                          annotation_position="top left", annotation_font_color="#8c8c8c",
                          annotation_font_size=10)
    for label, (steps, values) in curves.items():
        fig.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines", name=label))
    if natural is not None:
        # mid-grey: visible on the light and the dark theme alike
        fig.add_hline(y=natural, line_dash="dot", line_color="#8c8c8c", line_width=2,
                      annotation_text="best photo position", annotation_position="bottom right",
                      annotation_font_color="#8c8c8c")
    # two curves (Compare) in colours that cannot be confused: blue and the app's orange
    fig.update_layout(colorway=["#1f77b4", "#d9480f", "#2ca02c", "#9467bd"])
    fig.update_layout(title=title or None, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis_title="step", yaxis_title=y_title, legend=dict(orientation="h", y=1.1))
    return fig


def circuit_figure(nodes, edges, pictures: dict, labels: dict, row_titles: dict | None = None,
                   height: int = 660, width_px: int = 1000) -> go.Figure:
    """A circuit as a node-link diagram, the network flowing upwards: one row per level (the centre at 0, what
    builds it below, what it feeds above), each node its picture (``pictures[node]``: a data URI, or absent),
    each edge as wide as its strength and red when it excites, blue when it inhibits. ``width_px`` is the width
    the figure is expected to get (labels are placed under the pictures for it). The nodes are the figure's last
    trace, in ``nodes`` order (a click selects one: ``point_index`` is its position in ``nodes``)."""
    rows: dict[int, list] = {}
    for node in nodes:
        rows.setdefault(node.level, []).append(node)
    width = max(len(r) for r in rows.values())
    where, size = {}, {}
    for level, row in rows.items():
        step = width / len(row)
        for i, node in enumerate(row):
            where[node] = ((i + 0.5) * step - width / 2, 2.0 * level)
            size[node] = min(0.92 * step, 1.9 if level == 0 else 1.5)
    px = width_px / (width + 1.2)  # pixels per x unit
    top = max((abs(e.strength) for e in edges), default=1.0) or 1.0
    fig = go.Figure()
    for e in edges:  # centre to centre, under the pictures; they take no clicks (the nodes' centres are theirs)
        (x0, y0), (x1, y1) = where[e.source], where[e.target]
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False,
            line=dict(width=1 + 7 * abs(e.strength) / top, color="#d62728" if e.strength > 0 else "#1f77b4")))
    if edges:  # each edge's strength, on hover at its middle
        fig.add_trace(go.Scatter(
            x=[(where[e.source][0] + where[e.target][0]) / 2 for e in edges],
            y=[(where[e.source][1] + where[e.target][1]) / 2 for e in edges], mode="markers", showlegend=False,
            hoverinfo="text", marker=dict(size=10, color="rgba(0,0,0,0)"),
            hovertext=[f"{labels[e.source]} → {labels[e.target]}: {e.strength:+.3g}" for e in edges]))
    for node in nodes:
        x, y = where[node]
        if node in pictures:
            fig.add_layout_image(source=pictures[node], x=x, y=y, xref="x", yref="y", sizex=size[node],
                                 sizey=3 * size[node], xanchor="center", yanchor="middle", layer="above")
        fig.add_annotation(x=x, y=y, text=labels[node], showarrow=False, yshift=-(size[node] * px / 2 + 9),
                           font=dict(size=12 if node.level else 14, color="#6e6e6e"),
                           bgcolor="rgba(255,255,255,0.75)")
    fig.add_trace(go.Scatter(
        x=[where[n][0] for n in nodes], y=[where[n][1] for n in nodes], mode="markers", showlegend=False,
        hoverinfo="text", hovertext=[f"{labels[n]}: click to centre the circuit on it" for n in nodes],
        marker=dict(size=[size[n] * px for n in nodes], symbol="square",
                    color=["rgba(0,0,0,0.01)" if n in pictures else "#d9d9d9" for n in nodes],
                    line=dict(width=[3 if n.level == 0 else 0 for n in nodes], color="#ff7f0e"))))
    levels = sorted(rows)
    for level, title in (row_titles or {}).items():
        fig.add_annotation(x=-width / 2 - 0.55, y=2.0 * level, text=title, showarrow=False, xanchor="right",
                           font=dict(size=13, color="#8c8c8c"))
    fig.update_layout(height=height, margin=dict(l=90, r=10, t=10, b=10), dragmode=False,
                      xaxis=dict(visible=False, range=[-width / 2 - 0.6, width / 2 + 0.6], fixedrange=True),
                      yaxis=dict(visible=False, range=[2.0 * levels[0] - 1.2, 2.0 * levels[-1] + 1.0],
                                 fixedrange=True))
    return fig
