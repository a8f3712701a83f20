"""Compare: the seed's naive method and the modern default on the same channel, side by side."""

import numpy as np
import streamlit as st

from app_pages._shared import follow, generation_page, job_progress, layer_picker, manager, natural_max, show_metrics
from viz import VizError, get_layer, make_settings, parse_channel
from viz.figures import curve_figure
from viz.metrics import summarize
from viz.settings import MAX_SIZE, MAX_STEPS, MIN_SIZE

ss = st.session_state
dev, size0, steps0 = generation_page(
    "Compare methods", "Left: the original naive method (pixel noise, MSE to an unreachable target, post-ReLU). "
    "Right: the modern default (Fourier, decorrelated colour, transformation robustness).", "cmp")

with st.form("cmp_form"):
    c = st.columns([1.4, 1, 1, 1])
    layer = layer_picker("Layer", key="cmp_layer", container=c[0])
    channel = c[1].number_input("Channel", 0, 511, step=1, key="cmp_channel")
    size = c[2].number_input("Size (px)", MIN_SIZE, MAX_SIZE, min(size0, 128), step=16, key="cmp_size")
    steps = c[3].number_input("Steps", 1, MAX_STEPS, steps0, step=32, key="cmp_steps")
    snaps = st.multiselect("Also show the modern image at steps", [8, 16, 32, 64, 128, 256, 512],
                           default=[16, 32, 64], key="cmp_snaps")
    go = st.form_submit_button("Render both", type="primary", icon=":material/play_arrow:")

if go:
    try:
        channel = parse_channel(get_layer(layer), channel)
        w = ss.get("g_weights")
        jobs = {}
        for method in ("seed", "fourier"):
            settings = make_settings(layer, method, size, steps, None, 0, w)
            snap_steps = tuple(s for s in snaps if s < steps) if method == "fourier" else ()
            jobs[method] = manager().submit(settings, channel, dev, snap_steps).id
        ss["cmp_jobs"] = jobs
        st.query_params.update({"layer": layer, "channel": str(channel)})
    except VizError as exc:
        st.error(str(exc))


def current_jobs():
    ids = ss.get("cmp_jobs") or {}
    jobs = {m: manager().get(i) for m, i in ids.items()}
    return {m: j for m, j in jobs.items() if j is not None}


def render_compare(tick: int = 0) -> bool:
    """One frame of both jobs; True once both are finished (or gone)."""
    jobs = current_jobs()
    if not jobs:
        return True
    cols = st.columns(2)
    curves, nat = {}, None
    for col, method in zip(cols, ("seed", "fourier")):
        job = jobs.get(method)
        if job is None:
            continue
        with col:
            st.markdown(f"#### {method}")
            if job.state == "error":
                st.error(job.error)
                continue
            if not job.finished:
                job_progress(job, manager().position(job))
                if job.preview is not None:
                    st.image(job.preview, caption=f"step {job.step}", width="stretch")
            else:
                s = job.settings
                nat = natural_max(s.weights, job.device, s.layer, s.size)[job.channel]
                st.image(job.image, caption=f"{s.method} · {len(job.history)} steps", width="stretch")
                show_metrics(summarize(job.image, np.array(job.history), job.final_activation, nat), job.seconds)
            if job.history:
                curves[method] = (range(1, len(job.history) + 1), job.history)
    if curves:
        st.plotly_chart(curve_figure(curves, nat, title="Objective per step"), key=f"cmp_curve_{tick}")
    fourier = jobs.get("fourier")
    if fourier is not None and fourier.snapshots:
        st.markdown("#### The modern image along the way")
        steps = sorted(fourier.snapshots)
        for col, step in zip(st.columns(len(steps)), steps):
            col.image(fourier.snapshots[step], caption=f"step {step}", width="stretch")
    return all(j.finished for j in jobs.values())


if any(not j.finished for j in current_jobs().values()):
    if follow(render_compare):
        st.rerun()
else:
    render_compare()
