"""Layer gallery: a paged grid of precomputed channel images; a channel's detail with its curve."""

import math

import streamlit as st

from app_pages._shared import gallery, link_state, plain, show_metrics
from viz import VizError
from viz.figures import curve_figure
from viz.metrics import strength, versus_photos
from viz.sheets import contact_sheet, layer_zip

PER_PAGE = 24
COLUMNS = 6
ss = st.session_state

st.title("Layer gallery")
g = gallery()
weights_list = g.weights()
if not weights_list:
    st.info("No precomputed gallery yet. Make one with `python -m viz precompute …` (see Overview).")
    st.stop()

link = link_state(default_layer=None)
c1, c2, c3 = st.columns([1, 2, 2])
w_default = ss.get("g_weights") if ss.get("g_weights") in weights_list else weights_list[0]
weights = c1.selectbox("Weights", weights_list, index=weights_list.index(w_default), key="gal_weights")
configs = g.configs(weights)
config = c2.selectbox("Config (method, size, steps)", configs, key="gal_config")
layers = g.layers(weights, config)
if "gal_layer" not in ss or (link.layer in layers and not ss.get("_gal_linked")):
    ss["gal_layer"] = link.layer if link.layer in layers else layers[-1]
    ss["_gal_linked"] = True
if link.layer is not None and link.layer not in layers:
    st.warning(f"No gallery for {link.layer} in {weights}/{config}: showing {ss['gal_layer']}.")
if ss.get("gal_layer") not in layers:
    ss["gal_layer"] = layers[-1]
layer = c3.selectbox("Layer", layers, key="gal_layer")

try:
    view = g.layer(weights, config, layer)
except VizError as exc:
    st.error(str(exc))
    st.stop()
for problem in view.problems:
    st.warning(f"Skipped: {plain(problem)}", icon=":material/broken_image:")

# The channel in the URL opens its detail.
channel = link.channel if link.layer == layer else None
if channel is not None and channel not in view.records:
    st.warning(f"Channel {channel} of {layer} is not in this gallery.")
    channel = None
st.query_params["layer"] = layer

if channel is not None:
    rec = view.records[channel]
    st.query_params["channel"] = str(channel)
    if st.button("← Back to the grid", key="back"):
        del st.query_params["channel"]
        st.rerun()
    st.subheader(f"{layer} · channel {channel}")
    left, right = st.columns([1, 1.4])
    data = view.image_bytes(channel)
    if data is None:
        left.error("This image is missing or corrupted; the next precompute will redo it.")
    else:
        left.image(data, width="stretch")
        left.download_button("Download PNG", data, f"{weights}_{layer}_c{channel:04d}.png", "image/png")
    right.plotly_chart(curve_figure({"objective": (rec["history_steps"], rec["history"])}, rec["natural_max"]),
                       key="detail_curve")
    with right:
        show_metrics({**rec, **rec["metrics"]}, rec["seconds"])
    right.json({k: rec[k] for k in ("weights", "settings", "seed", "steps", "attempts", "device", "created")},
               expanded=False)
    st.stop()
else:
    st.query_params.pop("channel", None)

f1, f2, f3 = st.columns([1.2, 1.2, 2])
show = f1.radio("Show", ["all", "flagged only", "unflagged only"], horizontal=True, key="gal_show")
order = f2.radio("Order", ["channel", "strongest first"], horizontal=True, key="gal_order")
chans = view.channels()
if show == "flagged only":
    chans = [c for c in chans if view.records[c]["flags"]]
elif show == "unflagged only":
    chans = [c for c in chans if not view.records[c]["flags"]]
if order == "strongest first":
    chans.sort(key=lambda c: -strength(view.records[c]))
pages = max(1, math.ceil(len(chans) / PER_PAGE))
page = f3.number_input(f"Page (of {pages})", 1, pages, 1, key="gal_page") if pages > 1 else 1
st.caption(f"{len(chans)} of {len(view.records)} channels · {view.settings.get('method')} at "
           f"{view.settings.get('size')} px, {view.settings.get('steps')} steps · weights {weights}")

shown = chans[(page - 1) * PER_PAGE: page * PER_PAGE]
for row in range(0, len(shown), COLUMNS):
    cols = st.columns(COLUMNS)
    for col, ch in zip(cols, shown[row: row + COLUMNS]):
        rec = view.records[ch]
        data = view.image_bytes(ch)
        if data is None:
            col.warning(f"ch {ch}: image corrupted")
            continue
        ratio, why = versus_photos(rec, digits=1)
        col.image(data, width="stretch")
        label = f"ch {ch} · {ratio}" + (" ⚠" if rec["flags"] else "")
        if col.button(label, key=f"open_{ch}", width="stretch", help=(f"Flagged: {plain(', '.join(rec['flags']))}" if rec["flags"] else why) + "; click for details"):
            st.query_params["channel"] = str(ch)
            st.rerun()

d1, d2 = st.columns(2)
d1.download_button("Download layer (zip)", lambda: layer_zip(view), f"{weights}_{config}_{layer}.zip",
                   "application/zip", key="dl_zip")
d2.download_button("Download contact sheet (PNG)", lambda: contact_sheet(view),
                   f"{weights}_{config}_{layer}_sheet.png", "image/png", key="dl_sheet")
