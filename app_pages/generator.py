"""Generator: one channel on demand, watching it form live."""

import numpy as np
import streamlit as st

from app_pages._shared import (PERSIST, app_words, estimate_line, follow, generation_page, job_progress, layer_picker,
                               manager, remember_link, session_id, show_metrics)
from viz import DEFAULT_METHOD, METHODS, VizError, get_layer, make_settings, parse_channel
from viz.figures import curve_figure
from viz.images import png_bytes
from viz.jobs import JobSpec
from viz.metrics import summarize
from viz.settings import MAX_SIZE, MAX_STEPS, MIN_SIZE

ss = st.session_state
dev, _, _ = generation_page(
    "Generator", "Pick a channel and watch its image form. The same settings twice give the same image, instantly "
    "the second time.", "gen", method=ss.get("g_method", DEFAULT_METHOD))

# No min/max on the numbers: an out-of-range value gets a sentence below instead of a silently red field.
c = st.columns([1.4, 1, 1.2])
layer = layer_picker("Layer", key="gen_layer", container=c[0])
channel = c[1].number_input("Channel", step=1, key="gen_channel", **PERSIST)
method = c[2].selectbox("Method", list(METHODS), key="gen_method", **PERSIST)
c = st.columns(4)
size = c[0].number_input("Size (px)", step=16, key="gen_size", help=f"{MIN_SIZE}-{MAX_SIZE} px", **PERSIST)
steps = c[1].number_input("Steps", step=32, key="gen_steps", help=f"1-{MAX_STEPS}", **PERSIST)
lr = c[2].number_input("Learning rate", value=METHODS[method].lr, step=0.01, format="%.3f", key="gen_lr",
                       help="above 0, at most 10", **PERSIST)
seed = c[3].number_input("Seed", value=0, step=1, key="gen_seed", **PERSIST)

spec = None
try:
    spec = JobSpec(make_settings(layer, method, size, steps, lr, seed, ss.get("g_weights")),
                   parse_channel(get_layer(layer), channel), dev)
    estimate_line([spec])
except VizError as exc:
    st.error(app_words(exc), icon=":material/error:")
go = st.button("Generate", type="primary", icon=":material/play_arrow:", key="gen_go", disabled=spec is None)

if go and spec is not None:
    try:
        job = manager().submit_many([spec], session=session_id(), tag="generator")[0]
        ss["gen_job"] = job.id
        ss.pop("gen_partial", None)
        s = spec.settings
        remember_link("gen", layer=s.layer, channel=spec.channel, size=s.size, steps=s.steps, method=s.method)
    except VizError as exc:
        st.error(app_words(exc))

job = manager().get(ss.get("gen_job", ""))


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
    st.subheader(f"{s.layer} · channel {job.channel} · {s.method}")
    left, right = st.columns([1, 1.4])
    if not job.finished:
        with right:
            job_progress(job, manager().position(job))
        if job.preview is not None:
            left.image(job.preview, caption=f"step {job.step}", width="stretch")
        if job.history:
            right.plotly_chart(curve_figure({"objective": (range(1, len(job.history) + 1), job.history)}),
                               key=f"gen_live_curve_{tick}")
        return False
    if job.state == "error":
        st.error(app_words(job.error))
        return True
    r = job.result
    summary = summarize(r.image, np.array(r.history), r.final_activation, r.natural)
    caption = f"{job.stopped or 'cancelled'}: the image so far" if job.state == "cancelled" else (
        "from the result cache" if job.cached else f"{s.steps} steps")
    left.image(r.image, caption=caption, width="stretch")
    left.download_button("Download PNG", png_bytes(r.image),
                         f"{s.weights}_{s.layer}_c{job.channel:04d}_{s.method}.png", "image/png", key="gen_dl")
    with right:
        st.plotly_chart(curve_figure({"objective": (range(1, len(r.history) + 1), r.history)}, r.natural),
                        key="gen_curve")
        show_metrics(summary, r.seconds, curve_last=r.history[-1] if r.history else None)
    return True


if job is not None and not job.finished:
    if st.button("Cancel", icon=":material/stop:", key="gen_cancel"):
        manager().cancel(job, session_id())
        ss["gen_partial"] = {"title": f"{job.settings.layer} · channel {job.channel} · {job.settings.method}",
                             "step": job.step, "image": job.preview if job.preview is not None else
                             np.zeros((job.settings.size, job.settings.size, 3), np.uint8)}
        ss.pop("gen_job", None)
        render_job()
    elif follow(render_job):
        st.rerun()  # the finished page, without the Cancel button
else:
    render_job()
