"""Your photo: upload an image (or pick a bundled one) and see which channels of a layer fire most on it, and the
few groups of channels the layer sees in it (app_pages/_groups.py)."""

import numpy as np
import streamlit as st

from app_pages._forms import PERSIST, layer_picker
from app_pages._groups import show_groups
from app_pages._results import plain
from app_pages._server import app_words, device, gallery, load_model_for, manager
from viz import VizError
from viz.atlas.photo import overlay, respond
from viz.base.corpus import BUNDLED, UPLOAD_SIDE, bundled, decode, load_rgb
from viz.base.images import png_bytes, thumbnail

MAX_MB = 20
SHOWN = 12
ss = st.session_state

st.title("Your photo")
st.caption("Which channels fire on a photo, and where: one pass of the network over it (short side 224 px). "
           "Under each map: the channel's **peak** (its strongest response in your photo) and **× its p99.9**, "
           "that peak over the channel's 99.9th percentile in the bundled photos (above 1×: stronger than it "
           "almost ever fires on them). The map shows where it fires (bright); the rest of the photo is dimmed. "
           "(The gallery's \"× best photo\" is another quantity: a whole image's mean over the best photo "
           "position.)")
KEPT_SIDE = 1024  # an upload is kept for this visitor at most this large (a few MB at most per visitor)


def _upload_changed() -> None:
    if ss.get("photo_upload") is None:  # the visitor removed it: forget it
        ss.pop("photo_kept", None)


def _forget() -> None:
    ss.pop("photo_kept", None)


c1, c2 = st.columns([1.4, 1])
upload = c1.file_uploader(f"Upload a photo (at most {MAX_MB} MB: jpg, png, webp, bmp, tiff)",
                          type=["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"], key="photo_upload",
                          on_change=_upload_changed)
kept = ss.get("photo_kept") if upload is None else None  # an upload survives a visit to another page and Back
if kept is not None:
    c1.caption(f"Your earlier upload, {kept[0]}, is still used.")
    c1.button("Forget it", key="photo_forget", on_click=_forget, icon=":material/close:")
pick = c2.selectbox("…or pick a bundled photo", list(BUNDLED), key="photo_pick", **PERSIST,
                    format_func=lambda n: f"{n.split('/')[-1]} ({BUNDLED[n][2]})",
                    disabled=upload is not None or kept is not None,
                    help="your upload is used; remove it to pick a bundled photo"
                    if upload is not None or kept is not None else None)
ss.setdefault("photo_layer", "conv4_3")
layer = layer_picker("Layer", key="photo_layer", container=c2)

image, source = None, pick
try:
    if upload is not None:
        source = plain(upload.name)  # a file name is text, never Markdown (an image tag in it fetches a URL)
        image = decode(upload.getvalue(), MAX_MB << 20, UPLOAD_SIDE)
        if ss.get("photo_kept", ("", b"", None))[2] != upload.file_id:  # once per upload
            ss["photo_kept"] = (source, png_bytes(thumbnail(image, KEPT_SIDE), optimize=False), upload.file_id)
    elif kept is not None:
        source, image = kept[0], decode(kept[1])
    else:
        image = load_rgb(bundled().path(pick))
except VizError as exc:
    st.warning(f"{source[:60]}: {app_words(exc)}", icon=":material/broken_image:")
    st.stop()

weights = ss.get("g_weights", "oxford")
with st.spinner(f"Running {layer} of VGG16 ({weights}) over {source}…"):
    try:
        with manager().photo_lane.enter():  # one photo pass at a time, server-wide
            response = respond(load_model_for(weights), image, layer)
    except VizError as exc:
        st.error(app_words(exc))
        st.stop()

g = gallery()
config = g.config_for(weights, layer)
view = g.layer(weights, config, layer) if config else None
st.subheader(f"The {SHOWN} channels of {layer} that fire most on {source}")
left, right = st.columns([1, 3])
left.image(response.image, caption=f"{source} as the network sees it", width="stretch")
with right:
    for row in range(0, SHOWN, 4):
        cols = st.columns(4)
        for col, ch in zip(cols, response.ranked(SHOWN)[row: row + 4]):
            score = response.score[ch]
            col.image(overlay(response.image, response.maps[ch]), width="stretch",
                      caption=f"peak {response.peak[ch]:.4g}" + ("" if np.isnan(score) else
                                                                  f" · {max(score, 0):.1f}× its p99.9"))
            if view is not None and ch in view.records and (data := view.image_bytes(ch)) is not None:
                col.image(data, width=64)
            col.page_link("app_pages/gallery.py", label=f"channel {ch}",
                          query_params={"layer": layer, "channel": str(ch)})

st.divider()
show_groups(response.image, source, layer, weights, device(), view)
