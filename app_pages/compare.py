"""Compare: any two recipes or views of the same channel side by side (by default the seed's naive method and the
modern default)."""

import numpy as np
import streamlit as st

from app_pages._forms import (
    PERSIST,
    estimate_line,
    follow,
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
from app_pages._results import show_metrics
from app_pages._server import app_words, manager, session_id, visitor_id
from viz import DEFAULT_METHOD, METHODS, VizError, get_layer, make_settings, parse_channel
from viz.atlas.metrics import summarize
from viz.dashboard.figures import NO_TOOLBAR, curve_figure
from viz.engine.settings import MAX_STEPS
from viz.engine.views import LABELS as VIEW_LABELS
from viz.engine.views import curve_words
from viz.serving.jobs import JobSpec

SIMPLE_VIEWS = ["channel", "neuron", "negative", "diversity"]  # the views that need no more than a channel

ss = st.session_state
dev, _, _ = generation_page(
    "Compare", "Two ways of rendering the same channel, side by side. By default, left: the original naive method "
    "(pixel noise, MSE to an unreachable target, post-ReLU); right: the modern default (Fourier, decorrelated "
    "colour, transformation robustness). Pick any method and view on either side.", "cmp")

SIDES = {"left": ("seed", "channel"), "right": (DEFAULT_METHOD, "channel")}

c = st.columns([1.4, 1, 1, 1])
layer = layer_picker("Layer", key="cmp_layer", container=c[0])
channel = c[1].number_input("Channel", step=1, key="cmp_channel", **PERSIST)
size = c[2].number_input("Size (px)", step=16, key="cmp_size", help=size_help(
    *((ss.get(f"cmp_{side}_method", SIDES[side][0]), 4 if ss.get(f"cmp_{side}_view") == "diversity" else 1)
      for side in SIDES)), **PERSIST)
steps = c[3].number_input("Steps", step=32, key="cmp_steps", help=f"1-{MAX_STEPS}", **PERSIST)


# both sides live in the URL: a link reproduces the comparison
SIDE_FIELDS = {f"{side}_{what}": (f"cmp_{side}_{what}", one_of(list(METHODS) if what == "method" else SIMPLE_VIEWS))
               for side in SIDES for what in ("method", "view")}
url_form("cmp", SIDE_FIELDS)
choice = {}
for col, (side, (method0, view0)) in zip(st.columns(2), SIDES.items()):
    a, b = col.columns(2)
    method = a.selectbox(f"{side.title()}: method", list(METHODS), index=list(METHODS).index(method0),
                         key=f"cmp_{side}_method", **PERSIST)
    view = b.selectbox(f"{side.title()}: view", SIMPLE_VIEWS, index=SIMPLE_VIEWS.index(view0),
                       format_func=VIEW_LABELS.get, key=f"cmp_{side}_view", **PERSIST)
    choice[side] = (method, view)
write_url_form("cmp", SIDE_FIELDS, {f"{side}_{what}": value for side, (method, view) in choice.items()
                                    for what, value in (("method", method), ("view", view))})
snaps = st.multiselect("Also show the right image at steps", [8, 16, 32, 64, 128, 256, 512],
                       default=[16, 32, 64], key="cmp_snaps", **PERSIST)

specs, fits = [], False
try:
    ch = parse_channel(get_layer(layer), channel)
    for side, (method, view) in choice.items():
        settings = make_settings(layer, method, size, steps, None, 0, ss.get("g_weights"), view=view)
        snap_steps = tuple(s for s in snaps if s < steps) if side == "right" else ()
        specs.append(JobSpec(settings, ch, dev, snap_steps))
    fits = estimate_line(specs)
except VizError as exc:
    specs = []
    st.error(app_words(exc), icon=":material/error:")
go = st.button("Render both", type="primary", icon=":material/play_arrow:", key="cmp_go",
                disabled=not specs or not fits)

if go and specs:
    try:
        jobs = manager().submit_many(specs, session=session_id(), visitor=visitor_id(), tag="compare")
        ss["cmp_jobs"] = {side: job.id for side, job in zip(choice, jobs)}
        s = specs[0].settings
        remember_link("cmp", layer=s.layer, channel=specs[0].channel, size=s.size, steps=s.steps)
    except VizError as exc:
        st.error(app_words(exc))


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
    curves, nat, words = {}, None, set()
    for col, side in zip(cols, ("left", "right")):
        job = jobs.get(side)
        if job is None:
            continue
        s = job.settings
        words.add(curve_words(s.view))
        method = f"{s.method}" + ("" if s.view == "channel" else f" · {s.view}")
        with col:
            st.markdown(f"#### {method}")
            if job.state == "error":
                st.error(app_words(job.error))
                continue
            if not job.finished:
                job_progress(job, manager().position(job))
                if job.preview is not None:
                    st.image(job.preview, caption=f"step {job.step}", width="stretch")
            else:
                r = job.result
                nat = r.natural
                caption = f"{job.stopped or 'cancelled'}: the image so far" if job.state == "cancelled" else \
                    f"{method} · {len(r.history)} steps"
                st.image(r.image, caption=caption, width="stretch")
                show_metrics(summarize(r.image, np.array(r.history), r.final_activation, nat), r.seconds,
                             curve_last=r.history[-1] if r.history else None)
            if job.history:
                curves[f"{side}: {method}"] = (range(1, len(job.history) + 1), job.history)
    if curves:
        # one label when both sides measure the same thing; else each side's view says what its curve is
        (label, same_units), = words if len(words) == 1 else {("objective (each side's view)", False)}
        st.plotly_chart(curve_figure(curves, nat if same_units else None, title="Objective per step",
                                     y_title=label), key=f"cmp_curve_{tick}", config=NO_TOOLBAR)
    right = jobs.get("right")
    if right is not None and right.snapshots:
        st.markdown("#### The right image along the way")
        steps = sorted(right.snapshots)
        for col, step in zip(st.columns(len(steps)), steps):
            col.image(right.snapshots[step], caption=f"step {step}", width="stretch")
    return all(j.finished for j in jobs.values())


if any(not j.finished for j in current_jobs().values()):
    if st.button("Cancel", icon=":material/stop:", key="cmp_cancel"):
        cancelled = list(current_jobs().values())
        for job in cancelled:
            manager().cancel(job, session_id())
        ss.pop("cmp_jobs", None)
        settle(cancelled)
        ss["cmp_cancelled"] = cancelled
        st.rerun()  # the page without Cancel
    elif follow(render_compare):
        st.rerun()
else:
    cancelled = ss.pop("cmp_cancelled", None)
    if cancelled:
        st.info("Cancelled.")
    render_compare()
    if cancelled:  # the sidebar agrees once the renders have really stopped
        redraw_when_stopped(cancelled)
