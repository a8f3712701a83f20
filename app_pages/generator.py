"""Generator: one channel on demand, watching it form live."""

import io
import zipfile

import numpy as np
import streamlit as st

from app_pages._forms import (
    PERSIST,
    estimate_line,
    follow,
    fraction,
    generation_page,
    job_progress,
    layer_picker,
    one_of,
    redraw_when_stopped,
    remember_link,
    settle,
    size_help,
    url_form,
    write_url_form,
)
from app_pages._results import plain, show_attribution, show_metrics
from app_pages._server import app_words, manager, session_id, visitor_id
from viz import DEFAULT_METHOD, METHODS, VizError, get_layer, make_settings, parse_channel
from viz.atlas.metrics import summarize
from viz.base.corpus import BUNDLED, UPLOAD_SIDE, bundled, decode, load_rgb
from viz.base.images import png_bytes, unstrip
from viz.dashboard.figures import NO_TOOLBAR, OCTAVE_NOTE, curve_figure, octave_marks
from viz.engine.objectives import direction_digest, read_direction
from viz.engine.settings import MAX_STEPS
from viz.engine.views import LABELS as VIEW_LABELS
from viz.engine.views import curve_words, make_view, parse_view, start_photo, top_channel
from viz.serving.jobs import JobSpec

MAX_MB = 20
DIVERSITY_IMAGES, MIX_IMAGES = 4, 5  # the Images boxes' defaults (the size cap shrinks with them)

ss = st.session_state
dev, _, _ = generation_page(
    "Generator", "Pick a channel and watch its image form. The same settings twice give the same image, instantly "
    "the second time.", "gen", method=ss.get("g_method", DEFAULT_METHOD))

# the view and its options live in the URL too: a link reproduces what the visitor sees
VIEW_FIELDS = {
    "view": ("gen_view", one_of(list(VIEW_LABELS))), "x": ("gen_x", fraction),
    "y": ("gen_y", fraction), "n": ("gen_count", int), "w": ("gen_dweight", float), "mix": ("gen_mix", str),
    "mixn": ("gen_icount", int), "photo": ("gen_pick", one_of(list(BUNDLED))),
    "stay": ("gen_aweight", float), "dir": ("gen_dir", str), "cos": ("gen_cos", float),
}


url_form("gen", VIEW_FIELDS)


def view_count() -> int:
    """Images the chosen view renders at once, as far as the form says yet (the size cap shrinks with them)."""
    view = ss.get("gen_view")
    n = ss.get("gen_count", DIVERSITY_IMAGES) if view == "diversity" else (
        ss.get("gen_icount", MIX_IMAGES) if view == "mix" and "~" in str(ss.get("gen_mix", "")) else 1)
    try:
        return min(max(int(n), 1), 16)
    except (TypeError, ValueError):
        return 1


# No min/max on the numbers: an out-of-range value gets a sentence below instead of a silently red field.
c = st.columns([1.4, 1, 1.2])
layer = layer_picker("Layer", key="gen_layer", container=c[0])
# the mix and the direction name their own channels: the Channel box is not theirs (it says so, disabled)
own_channels = ss.get("gen_view") in ("mix", "direction")
channel = c[1].number_input("Channel", step=1, key="gen_channel", disabled=own_channels,
                            help="not used by this view: its channels are in the box below" if own_channels else None,
                            **PERSIST)
method = c[2].selectbox("Method", list(METHODS), key="gen_method", **PERSIST)
c = st.columns(4)
size = c[0].number_input("Size (px)", step=16, key="gen_size", help=size_help((method, view_count())), **PERSIST)
steps = c[1].number_input("Steps", step=32, key="gen_steps", help=f"1-{MAX_STEPS}", **PERSIST)
lr = c[2].number_input("Learning rate", value=METHODS[method].lr, step=0.01, format="%.3f", key="gen_lr",
                       help="above 0, at most 10", **PERSIST)
seed = c[3].number_input("Seed", value=0, step=1, key="gen_seed", **PERSIST)

kind = st.segmented_control("View", list(VIEW_LABELS), format_func=VIEW_LABELS.get, default="channel",
                            key="gen_view", **PERSIST) or "channel"
options: dict = {}
start_png = b""
if kind == "neuron":
    c = st.columns(2)
    options["x"] = c[0].slider("Position across (fraction of the map)", 0.0, 1.0, 0.5, 0.05, key="gen_x", **PERSIST)
    options["y"] = c[1].slider("Position down", 0.0, 1.0, 0.5, 0.05, key="gen_y", **PERSIST)
elif kind == "diversity":
    c = st.columns(2)
    options["count"] = c[0].number_input("Images", value=DIVERSITY_IMAGES, step=1, key="gen_count", help="2-16",
                                         **PERSIST)
    options["weight"] = c[1].number_input("Diversity weight", value=1.0, step=0.25, key="gen_dweight",
                                          help="how hard the images push each other apart", **PERSIST)
elif kind == "mix":
    c = st.columns([2, 1])
    options["mix"] = c[0].text_input("Channels", value=f"{int(channel)}+0.5*25" if channel is not None else "0",
                                     key="gen_mix", help="a weighted sum like 104+0.5*25, or A~B to interpolate",
                                     **PERSIST)
    if "~" in options["mix"]:
        options["count"] = c[1].number_input("Images", value=MIX_IMAGES, step=1, key="gen_icount", help="2-16",
                                             **PERSIST)
elif kind == "accent":
    c = st.columns([1.4, 1, 1])
    upload = c[0].file_uploader(f"Start from your photo (at most {MAX_MB} MB)", key="gen_upload",
                                type=["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"])
    pick = c[1].selectbox("…or a bundled photo", list(BUNDLED), key="gen_pick", **PERSIST,
                          format_func=lambda n: n.split("/")[-1], disabled=upload is not None,
                          help="your upload is used; remove it to start from a bundled photo"
                          if upload is not None else None)
    options["weight"] = c[2].number_input("Stay close", value=1.0, step=0.25, key="gen_aweight",
                                          help="how strongly the image stays near the photo", **PERSIST)

elif kind == "direction":
    c = st.columns([2, 1])
    direction_text = c[0].text_input("Direction", value=f"{int(channel)}:0.7,25:0.3" if channel is not None else "0:1",
                                     key="gen_dir", help="channel weights like 104:0.7,25:0.3 (the rest 0; only the "
                                     "direction counts); the image is filed under the largest", **PERSIST)
    options["cos"] = c[1].number_input("Cosine power", value=0.0, step=1.0, min_value=0.0, key="gen_cos",
                                       help="0: the dot product with the direction; 1-8: Lucid's cosine-weighted "
                                            "variant (rewards activations pointing along it)", **PERSIST)

shown = {"view": None if kind == "channel" else kind}
if kind == "neuron":
    shown.update(x=options["x"], y=options["y"])
elif kind == "diversity":
    shown.update(n=options["count"], w=options["weight"])
elif kind == "mix":
    shown.update(mix=options["mix"], mixn=options.get("count"))
elif kind == "accent" and upload is None:  # an upload cannot travel in a link; a bundled photo can
    shown.update(photo=pick, stay=options["weight"])
elif kind == "direction":
    shown.update(dir=direction_text, cos=options["cos"] or None)
write_url_form("gen", VIEW_FIELDS, shown)

spec, fits = None, False
try:
    photo = vector = None
    if kind == "direction":
        vector = read_direction(direction_text, get_layer(layer).name)
        options["direction"] = direction_digest(vector)
    if kind == "accent":
        photo = (decode(upload.getvalue(), MAX_MB << 20, UPLOAD_SIDE) if upload is not None
                 else load_rgb(bundled().path(pick)))
        photo, options["start"], start_png = start_photo(photo)
    view = make_view(kind, get_layer(layer).name, **options)
    spec = JobSpec(make_settings(layer, method, size, steps, lr, seed, ss.get("g_weights"), view=view),
                   top_channel(vector) if vector is not None else
                   view.primary if view.primary is not None else parse_channel(get_layer(layer), channel), dev,
                   start=start_png, direction=() if vector is None else tuple(vector.tolist()))
    fits = estimate_line([spec])
except VizError as exc:
    st.error(app_words(exc), icon=":material/error:")
go = st.button("Generate", type="primary", icon=":material/play_arrow:", key="gen_go",
                 disabled=spec is None or not fits)  # over this server's limits: refused before the click

if go and spec is not None:
    try:
        job = manager().submit_many([spec], session=session_id(), visitor=visitor_id(), tag="generator")[0]
        ss["gen_job"] = job.id
        ss.pop("gen_partial", None)
        if kind == "accent":  # the result names its photo (the view itself only knows the photo's digest)
            ss["gen_start_name"] = (job.id, plain(upload.name) if upload is not None else pick.split("/")[-1])
        s = spec.settings
        remember_link("gen", layer=s.layer, channel=spec.channel, size=s.size, steps=s.steps, method=s.method)
        ss["_gen_scroll"] = True  # bring the live view into sight (below the form on a laptop screen)
    except VizError as exc:
        st.error(app_words(exc))

job = manager().get(ss.get("gen_job", ""))


def image_words(view, count: int) -> list[str]:
    """A caption per image of a several-image view: which channels, with which weights."""
    if view.kind == "mix" and view.to is not None:
        a, b = view.terms[0][0], view.to
        return [f"{1 - k / (count - 1):.2g}·ch {a} + {k / (count - 1):.2g}·ch {b}" for k in range(count)]
    return [f"image {i + 1} of {count}" + (" (pushed apart from the others)" if view.kind == "diversity" else "")
            for i in range(count)]


def images_zip(images, stem: str, kind: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, image in enumerate(images):
            z.writestr(f"{stem}_{kind}-{i}.png", png_bytes(image))
    return buf.getvalue()


def view_words(job) -> str:
    """The view as a visitor named it: an accent names its photo (not the photo's digest)."""
    s = job.settings
    if s.view.startswith("accent("):
        job_id, name = ss.get("gen_start_name", ("", "your photo"))
        return f"accentuates {name if job_id == job.id else 'a photo'}"
    return "" if s.view == "channel" else s.view


def render_job(tick: int = 0) -> bool:
    """One frame of the current job; True once it is finished (or gone)."""
    job = manager().get(ss.get("gen_job", ""))
    if job is None:
        partial = ss.get("gen_partial")
        if partial is not None:  # this visitor cancelled; the job may go on for others
            st.subheader(partial["title"])
            st.image(partial["image"], caption=f"cancelled at step {partial['step']}: the image so far", width=380)
        return True
    s = job.settings
    st.subheader(" · ".join(p for p in (f"{s.layer} · channel {job.channel}", s.method, view_words(job)) if p))
    left, right = st.columns([1, 1.4])
    if not job.finished:
        with right:
            job_progress(job, manager().position(job))
        if job.preview is not None:
            left.image(job.preview, caption=f"step {job.step}", width="stretch")
        if job.history:
            right.plotly_chart(curve_figure({"objective": (range(1, len(job.history) + 1), job.history)},
                                            y_title=curve_words(s.view)[0]), key=f"gen_live_curve_{tick}",
                               config=NO_TOOLBAR)
        return False
    if job.state == "error":
        st.error(app_words(job.error))
        return True
    r = job.result
    summary = summarize(r.image, np.array(r.history), r.final_activation, r.natural)
    caption = f"{job.stopped or 'cancelled'}: the image so far" if job.state == "cancelled" else (
        "from the result cache" if job.cached else f"{s.steps} steps")
    stem = f"{s.weights}_{s.layer}_c{job.channel:04d}_{s.method}"
    try:
        view = parse_view(s.view, s.layer)
    except VizError:
        view = None
    images = unstrip(r.image, view.images_per_channel()) if view is not None else [r.image]
    if len(images) > 1:  # a view's several images: each captioned, each its own download, and all in one zip
        st.caption(caption)
        for i, (col, image, words) in enumerate(zip(st.columns(len(images)), images, image_words(view, len(images)))):
            col.image(image, caption=words, width="stretch")
            col.download_button("PNG", png_bytes(image), f"{stem}_{s.view.split('(')[0]}-{i}.png", "image/png",
                                key=f"gen_dl_{i}", width="stretch")
        st.download_button(f"Download all {len(images)} (zip)", images_zip(images, stem, s.view.split("(")[0]),
                           f"{stem}_{s.view.split('(')[0]}.zip", "application/zip", key="gen_dl_all")
    else:
        left.image(r.image, caption=caption, width="stretch")
    if job.spec.start:  # an accent: the photo it started from, beside what it became
        left.image(job.spec.start, caption=f"the start photo ({view_words(job).removeprefix('accentuates ')})",
                   width=160)
    if len(images) == 1:
        left.download_button("Download PNG", png_bytes(r.image), f"{stem}.png", "image/png", key="gen_dl")
    with right if len(images) == 1 else st.container():  # several images: the curve under them, full width
        words, same_units = curve_words(s.view)
        marks = octave_marks(s.method, s.steps)
        st.plotly_chart(curve_figure({"objective": (range(1, len(r.history) + 1), r.history)},
                                     r.natural if same_units else None, y_title=words, octaves=marks),
                        key="gen_curve", config=NO_TOOLBAR)
        if marks:
            st.caption(OCTAVE_NOTE)
        show_metrics(summary, r.seconds, curve_last=r.history[-1] if r.history else None)
        show_attribution(r)
    return True


if ss.pop("_gen_scroll", False):
    st.html(f"<div id='live-view'></div><script>/* {job.id if job else ''} */ for (const ms of [400, 1500, 3000]) "
            "setTimeout(() => document.getElementById('live-view')?.scrollIntoView({behavior: 'smooth', "
            "block: 'start'}), ms)</script>", unsafe_allow_javascript=True)  # again as the live view grows
if job is not None and not job.finished:
    if st.button("Cancel", icon=":material/stop:", key="gen_cancel"):
        manager().cancel(job, session_id())
        ss["gen_partial"] = {"title": f"{job.settings.layer} · channel {job.channel} · {job.settings.method}",
                             "job": job, "step": job.step, "image": job.preview if job.preview is not None else
                             np.zeros((job.settings.size, job.settings.size, 3), np.uint8)}
        ss.pop("gen_job", None)
        settle([job])
        st.rerun()  # the page without Cancel, showing the image so far
    elif follow(render_job):
        st.rerun()  # the finished page, without the Cancel button
else:
    render_job()
    if job is None and ss.get("gen_partial"):  # cancelled: the sidebar agrees once the render has really stopped
        redraw_when_stopped([ss["gen_partial"]["job"]])
