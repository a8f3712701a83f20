"""How a circuit is shown: the "Built from" and "Feeds into" strips of a channel, and the pictures of its nodes
(gallery thumbnails; a colour swatch for the photo's colour planes). Streamlit only; the rankings are
:mod:`viz.atlas.circuits`."""

from __future__ import annotations

import base64

import numpy as np
import streamlit as st

from app_pages._server import app_words, gallery, load_model_for
from viz import VizError
from viz.atlas.circuits import Circuit, Link, circuit
from viz.atlas.contributions import contribution_table, table_ready
from viz.atlas.kernels import diverging_picture
from viz.atlas.wiring import COLOURS, INPUT, layer_above
from viz.base.images import image_mime, png_bytes

MEASURE_WORDS = {"weight": "by weight", "contribution": "by contribution on photos"}
MEASURE_HELP = ("**by weight**: the sum of the 3×3 kernel that connects two channels (what the weights allow); "
                "**by contribution on photos**: the share of the channel's pre-activation each input supplies at "
                "its 8 strongest positions in the bundled photos (what actually drives it).")
STRIP = (5, 3)  # excitatory, inhibitory links shown


def picture(weights: str, layer: str, channel: int) -> bytes | None:
    """The gallery's image of a channel (from the config the gallery shows its layer from), or a colour swatch for
    the photo's colour planes; None when there is none."""
    if layer == INPUT:
        swatch = np.zeros((48, 48, 3), np.uint8)
        swatch[..., channel] = 255
        return png_bytes(swatch, optimize=False)
    g = gallery()
    config = g.config_for(weights, layer)
    if config is None:
        return None
    try:
        return g.layer(weights, config, layer).image_bytes(channel)
    except VizError:
        return None


def data_uri(data: bytes) -> str:
    return f"data:{image_mime(data)};base64," + base64.b64encode(data).decode()


def strength_text(lk: Link, by: str) -> str:
    return f"{lk.strength:+.1%}" if by == "contribution" else f"{lk.strength:+.3g}"


def model_for(weights: str, by: str):
    """The model, with the contribution table ready when ``by`` needs it: the photos are read once per weights,
    under a progress bar."""
    model = load_model_for(weights)
    if by == "contribution" and not table_ready(model):
        bar = st.progress(0.0, text="Reading the bundled photos once for the contribution measure…")
        contribution_table(model, progress=lambda done, total: bar.progress(
            done / total, text=f"Reading the bundled photos once for the contribution measure: {done}/{total}"))
        bar.empty()
    return model


def get_circuit(weights: str, layer: str, channel: int, direction: str, by: str, top: int = 8) -> Circuit | None:
    """The circuit, or None with one line shown."""
    try:
        return circuit(model_for(weights, by), layer, channel, direction, by, 1, top)
    except VizError as exc:
        st.info(app_words(exc), icon=":material/info:")
        return None


def show_strip(title: str, c: Circuit, weights: str) -> None:
    """One strip: the strongest excitatory then inhibitory links, each with its gallery picture, its channel as a
    link, its strength and its kernel as a diverging heat map on one scale for the whole strip."""
    links = c.excite[:STRIP[0]] + c.inhibit[:STRIP[1]]
    st.markdown(f"**{title}** · {c.other} · {MEASURE_WORDS[c.by]}")
    if not links:
        st.caption("No excitatory or inhibitory links.")
        return
    if c.by == "contribution":
        st.caption(f"The share of {c.layer}:{c.channel}'s pre-activation each supplies at its strongest positions "
                   "in the bundled photos" if c.direction == "in" else
                   f"The share of each one's pre-activation that {c.layer}:{c.channel} supplies, at that channel's "
                   "strongest positions in the bundled photos")
    scale = max(float(np.abs(lk.kernel).max()) for lk in links)
    for col, lk in zip(st.columns(sum(STRIP)), links):
        data = picture(weights, lk.layer, lk.channel)
        if data is not None:
            col.image(data, width="stretch")
        col.image(diverging_picture(lk.kernel, 48, scale), width=48,
                  caption=f"{'excites' if lk.strength > 0 else 'inhibits'} {strength_text(lk, c.by)}")
        if lk.layer == INPUT:
            col.markdown(f"{COLOURS[lk.channel]}")
        else:
            col.page_link("app_pages/gallery.py", label=f"{lk.layer}:{lk.channel}",
                          query_params={"layer": lk.layer, "channel": str(lk.channel)})


def show_circuit_strips(weights: str, layer: str, channel: int) -> None:
    """A channel's "Built from" and "Feeds into" strips under its detail, with the measure as a choice (kept in
    the URL as ``by``) and a link to its circuit page."""
    st.markdown(f"#### Circuit: what builds {layer}:{channel} and what it feeds")
    default = st.query_params.get("by") if st.query_params.get("by") in MEASURE_WORDS else "weight"
    head = st.columns([2, 2])
    by = head[0].segmented_control("Rank the links", list(MEASURE_WORDS), default=default,
                                   format_func=MEASURE_WORDS.get, key="detail_by", help=MEASURE_HELP) or default
    if by != "weight":
        st.query_params["by"] = by
    else:
        st.query_params.pop("by", None)
    head[1].page_link("app_pages/circuit.py", label="Open its circuit (two levels down, one up)",
                      icon=":material/account_tree:",
                      query_params={"layer": layer, "channel": str(channel), "by": by})
    st.caption("Each kernel is drawn red where it excites and blue where it inhibits (white: 0), on one scale per "
               "strip.")
    built = get_circuit(weights, layer, channel, "in", by)
    if built is not None:
        show_strip("Built from", built, weights)
    if layer_above(layer) is None:
        st.caption(f"{layer} is the last conv layer: nothing in VGG16's conv base reads it.")
        return
    feeds = get_circuit(weights, layer, channel, "out", by)
    if feeds is not None:
        show_strip("Feeds into", feeds, weights)
