"""Circuit: a channel with what builds it two levels down and what it feeds one level up, as a node-link diagram
of gallery pictures; click a node (or its link) to centre the circuit on it. Everything is in the URL."""

import streamlit as st

from app_pages._circuits import MEASURE_HELP, MEASURE_WORDS, data_uri, model_for, picture
from app_pages._forms import link_state
from app_pages._server import app_words
from viz import LAYER_NAMES, LAYERS, VizError
from viz.atlas.circuits import neighbourhood
from viz.atlas.wiring import COLOURS, INPUT
from viz.dashboard.figures import circuit_figure

FAN = 4  # links followed from each node
ss = st.session_state

st.title("Circuit")
st.caption("What a channel is built from in the conv layers below it and what it feeds in the one above: VGG16 has "
           "no branches and its max-pools never mix channels, so each link is one 3×3 kernel. Edges are as wide as "
           "the link is strong, red where it excites and blue where it inhibits; from each channel the "
           f"{FAN} strongest links are followed. Click a picture to centre the circuit on it.")

link = link_state(default_layer=None)
given = {"layer": link.layer, "channel": link.channel,
         "by": st.query_params.get("by") if st.query_params.get("by") in MEASURE_WORDS else None,
         "depth": {"1": 1, "2": 2}.get(st.query_params.get("depth", ""))}
for name, bad in (("by", "weight or contribution"), ("depth", "1 or 2")):
    if name in st.query_params and given[name] is None:
        st.warning(f"Ignored part of the link: {name} must be {bad}.", icon=":material/link_off:")
        st.query_params.pop(name)
given = {k: v for k, v in given.items() if v is not None}
for name, value in {"layer": "conv5_1", "channel": 104, "by": "weight", "depth": 2}.items():
    ss.setdefault(f"cir_{name}", value)
if given and given != ss.get("_cir_link"):  # a new link (or Back/Forward) sets the form
    for name, value in given.items():
        ss[f"cir_{name}"] = value
    ss["_cir_link"] = given

if (goto := ss.pop("_cir_goto", None)) is not None:  # a clicked node
    ss["cir_layer"], ss["cir_channel"] = goto
c1, c2, c3, c4 = st.columns([1.6, 1, 1.6, 1])
# not persisted across pages (unlike the other pages' pickers): a link to this page must win over the last choice
layer = c1.selectbox("Layer", list(LAYER_NAMES), key="cir_layer",
                     format_func=lambda n: f"{n} ({LAYERS[n].channels} ch, RF {LAYERS[n].receptive_field}px)")
top = LAYERS[layer].channels - 1
if ss["cir_channel"] > top:
    ss["cir_channel"] = top
channel = int(c2.number_input(f"Channel (0-{top})", 0, top, step=1, key="cir_channel"))
by = c3.segmented_control("Rank the links", list(MEASURE_WORDS), format_func=MEASURE_WORDS.get, key="cir_by",
                          help=MEASURE_HELP) or "weight"
depth = c4.segmented_control("Levels below", [1, 2], key="cir_depth") or 2
state = {"layer": layer, "channel": channel, "by": by, "depth": depth}
st.query_params.update({k: str(v) for k, v in state.items()})
ss["_cir_link"] = state

weights = ss.get("g_weights", "oxford")
try:
    nodes, edges = neighbourhood(model_for(weights, by), layer, channel, by, below=depth, above=1, fan=FAN)
except VizError as exc:
    st.error(app_words(exc))
    st.stop()


def label(node) -> str:
    return COLOURS[node.channel] if node.layer == INPUT else str(node.channel)


pictures = {n: data_uri(data) for n in nodes if (data := picture(weights, n.layer, n.channel)) is not None}
rows = {}
for n in nodes:
    rows.setdefault(n.level, n.layer)
fig = circuit_figure(nodes, edges, pictures, {n: label(n) for n in nodes},
                     row_titles={lv: ("photo" if name == INPUT else name) for lv, name in rows.items()})
event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"cir_fig_{layer}_{channel}_{by}_{depth}",
                        config={"displayModeBar": False})
points = (event or {}).get("selection", {}).get("points", []) if event else []
for point in points:
    if point.get("curve_number") == len(fig.data) - 1 and 0 <= point.get("point_index", -1) < len(nodes):
        node = nodes[point["point_index"]]
        if node.layer != INPUT and (node.layer, node.channel) != (layer, channel):
            ss["_cir_goto"] = (node.layer, node.channel)  # applied before the widgets, on the rerun
            st.rerun()

centre_links = st.columns([1.3, 3])
centre_links[0].page_link("app_pages/gallery.py", label=f"{layer}:{channel} in the gallery",
                          icon=":material/grid_view:", query_params={"layer": layer, "channel": str(channel)})
st.markdown("**Walk it**: each channel centres the circuit on itself (the links keep your history: Back returns).")
for level in sorted({n.level for n in nodes}, reverse=True):
    if level == 0:
        continue
    row = [n for n in nodes if n.level == level]
    name = "photo" if row[0].layer == INPUT else row[0].layer
    st.markdown(f"{'Feeds into' if level > 0 else 'Built from'} ({name}, {abs(level)} level"
                f"{'s' * (abs(level) > 1)} {'up' if level > 0 else 'down'})")
    cols = st.columns(8)
    for i, n in enumerate(row):
        col = cols[i % 8]
        if n.layer == INPUT:
            col.markdown(COLOURS[n.channel])
        else:
            col.page_link("app_pages/circuit.py", label=f"{n.layer}:{n.channel}",
                          query_params={"layer": n.layer, "channel": str(n.channel), "by": by, "depth": str(depth)})
