"""Your photo, taken apart (issue 27): the few groups of channels a layer sees in a photo (NMF of its map), where
each is, what each looks like rendered (a job like any render), which channels make it up, the group grown in the
photo itself, and the pixels that drive a group or a channel."""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from app_pages._forms import PERSIST, defaults_for, estimate_line, job_progress
from app_pages._server import app_words, load_model_for, manager, session_alive, session_id, visitor_id
from viz import DEFAULT_METHOD, VizError, make_settings
from viz.atlas.factors import (
    DEFAULT_K,
    MAX_K,
    MIN_K,
    PALETTE,
    attribution,
    attribution_heat,
    group_picture,
    photo_factors,
)
from viz.atlas.photo import overlay
from viz.engine.objectives import direction_digest
from viz.engine.views import make_view, photo_digest, start_photo, top_channel
from viz.serving.jobs import JobSpec

ss = st.session_state
TOP = 5


@st.cache_data(show_spinner=False, max_entries=24)
def _factors(weights: str, layer: str, k: int, digest: str, _image: np.ndarray):
    with manager().photo_lane.enter():
        return photo_factors(load_model_for(weights), _image, layer, k)


@st.cache_data(show_spinner=False, max_entries=24)
def _attribution(weights: str, layer: str, digest: str, target: str, _image: np.ndarray, _vector) -> np.ndarray:
    kind, _, value = target.partition(":")
    model = load_model_for(weights)
    with manager().photo_lane.enter():
        if kind == "channel":
            return attribution_heat(attribution(model, _image, layer, channel=int(value)))
        return attribution_heat(attribution(model, _image, layer, vector=_vector))


def _swatch(i: int) -> str:
    """The group's colour in the legend: a square in Markdown's colour of that name (the coloured photo's)."""
    name = PALETTE[i % len(PALETTE)][0]
    return f":{name}[■]" if name else "■"


def _draw_job(job_id: str | None, empty: str, tick: int, label: str = "") -> bool:
    """One frame of a group's render (or of its accentuated photo); True once there is nothing to wait for."""
    job = manager().get(job_id) if job_id else None
    if job is None:
        st.caption(empty)
        return True
    # always two elements (picture, then progress or nothing): a frame replaces the previous one whole
    if not job.finished:
        (st.image(job.preview, caption=f"step {job.step}", width="stretch") if job.preview is not None
         else st.empty())
        job_progress(job, manager().position(job))
        return False
    if job.state == "error":
        st.error(app_words(job.error))
        st.empty()
        return True
    r = job.result
    what = f"{job.stopped or 'cancelled'}: the image so far" if job.state == "cancelled" else (
        "from the result cache" if job.cached else f"{job.settings.size} px · {job.settings.steps} steps")
    st.image(r.image, caption=label + what, width="stretch")
    st.empty()
    return True


def _follow(frames) -> bool:
    """Redraw each ``(slot, draw)`` once a second until every ``draw(tick)`` says it is finished (the Generator's
    :func:`~app_pages._forms.follow`, for several slots). Returns whether it had to wait."""
    sid, tick = session_id(), 0
    while True:
        if session_alive(sid) is False:
            return tick > 0
        manager().heartbeat(sid)
        done = True
        for slot, draw in frames:
            with slot.container():
                done = draw(tick) and done
        if done:
            return tick > 0
        tick += 1
        time.sleep(1.0)


def show_groups(image: np.ndarray, source: str, layer: str, weights: str, dev: str | None, gallery_view) -> None:
    """The Groups section of the Your photo page for ``image`` (the photo as the network sees it)."""
    st.subheader(f"Groups: the few things {layer} sees in {source}")
    st.caption("The layer's map of the photo (after its ReLU), positions × channels, factorized by non-negative "
               "matrix factorization into k groups (Olah et al. 2018, The Building Blocks of Interpretability): "
               "each group is a place in the photo (its map) and a direction over the layer's channels (what it "
               "is, rendered by activation maximization of that direction).")
    ss.setdefault("grp_k", DEFAULT_K)
    size0, steps0 = defaults_for(dev or "cpu")
    ss.setdefault("grp_size", size0)
    ss.setdefault("grp_steps", steps0)
    c = st.columns([1.2, 1, 1])
    k = c[0].slider("Groups (k)", MIN_K, MAX_K, step=1, key="grp_k", **PERSIST)
    size = c[1].number_input("Render size (px)", step=16, key="grp_size", **PERSIST)
    steps = c[2].number_input("Render steps", step=32, key="grp_steps", **PERSIST)

    digest = photo_digest(image)
    with st.spinner(f"Taking {source} apart at {layer}…"):
        try:
            f = _factors(weights, layer, int(k), digest, image)
        except VizError as exc:
            st.warning(app_words(exc), icon=":material/scatter_plot:")
            return
    here = (weights, layer, int(k), digest)

    left, right = st.columns([1, 1])
    left.image(group_picture(f), width="stretch",
               caption=f"{source}, each place coloured by the group strongest there (brighter: stronger)")
    legend = [f"{_swatch(i)} **Group {i + 1}** · {f.shares[i]:.0%} of the activation · channels "
              + ", ".join(str(ch) for ch, _ in f.top_channels(i, 3)) for i in range(f.k)]
    left.markdown("  \n".join(legend))
    left.caption(f"Factorized in {f.seconds:.1f} s; the groups explain {1 - f.error:.0%} of the map "
                 f"(relative error {f.error:.2f}).")

    with right:
        st.markdown("**Which pixels drive it** (gradient × input)")
        targets = [f"group:{i}" for i in range(f.k)] + sorted(
            {f"channel:{ch}" for i in range(f.k) for ch, _ in f.top_channels(i, TOP)}, key=lambda t: int(t[8:]))
        target = st.selectbox("Group or channel", targets, key="grp_target",
                              format_func=lambda t: (f"group {int(t[6:]) + 1} ({PALETTE[int(t[6:])][0] or 'dark'})"
                                                     if t.startswith("group") else f"channel {t[8:]}"))
        if target not in targets:
            target = targets[0]
        vec = f.directions[int(target[6:])] if target.startswith("group") else None
        with st.spinner("Differentiating…"):
            try:
                heat = _attribution(weights, layer, digest, target, image, vec)
            except VizError as exc:
                st.warning(app_words(exc))
                heat = None
        if heat is not None:
            st.image(overlay(f.image, heat), width="stretch",
                     caption="The pixels whose change would raise it most, weighted by the pixels themselves "
                             "(positive part, lightly blurred); the rest of the photo is dimmed.")

    # ------------------------------------------------------------------------------------ the renders
    method = ss.get("g_method", DEFAULT_METHOD)
    specs = []
    try:
        for vec in f.directions:
            settings = make_settings(layer, method, size, steps, None, 0, weights,
                                     view=f"direction({direction_digest(vec)})")
            specs.append(JobSpec(settings, top_channel(vec), dev or "cpu", direction=tuple(vec.tolist())))
        fits = estimate_line(specs)
    except VizError as exc:
        st.error(app_words(exc), icon=":material/error:")
        specs, fits = [], False
    ours = ss.get("grp_jobs") if ss.get("grp_jobs", {}).get("here") == here else None
    accent = ss.get("grp_accent") if ss.get("grp_accent", {}).get("here") == here else None
    b = st.columns([1.3, 1, 3])
    if b[0].button(f"Render the {f.k} groups", type="primary", icon=":material/play_arrow:", key="grp_go",
                   disabled=not specs or not fits or dev is None):
        try:
            jobs = manager().submit_many(specs, session=session_id(), visitor=visitor_id(), tag="groups")
            ours = ss["grp_jobs"] = {"here": here, "ids": [j.id for j in jobs]}
        except VizError as exc:
            st.error(app_words(exc))
    running = [j for i in ([*(ours or {}).get("ids", []), (accent or {}).get("id")])
               if i and (j := manager().get(i)) is not None and not j.finished]
    if running and b[1].button("Cancel", icon=":material/stop:", key="grp_cancel"):
        for j in running:
            manager().cancel(j, session_id())
        running = []

    frames = []
    for i in range(f.k):
        with st.container(border=True):
            st.markdown(f"{_swatch(i)} **Group {i + 1}** · {f.shares[i]:.0%} of {layer}'s activation")
            cols = st.columns([1, 1, 1.9])
            cols[0].image(overlay(f.image, f.maps[i]), width="stretch", caption="where it is")
            with cols[1]:
                slot = st.empty()
            job_id = (ours or {}).get("ids", [None] * f.k)[i] if ours else None
            frames.append((slot, lambda t, j=job_id: _draw_job(j, "rendered here when you press Render", t)))
            with cols[2]:
                st.markdown("Made of (weight in its direction):")
                chan_cols = st.columns(TOP)
                for col, (ch, w) in zip(chan_cols, f.top_channels(i, TOP)):
                    if gallery_view is not None and ch in gallery_view.records and \
                            (data := gallery_view.image_bytes(ch)) is not None:
                        col.image(data, width="stretch")
                    col.page_link("app_pages/gallery.py", label=f"{ch}", help=f"channel {ch} in the gallery",
                                  query_params={"layer": layer, "channel": str(ch)})
                    col.caption(f"{w:.2f}")
                if st.button("Accentuate this group in the photo", key=f"grp_accent_{i}",
                             icon=":material/auto_fix_high:", disabled=dev is None):
                    accent = _accent(f, i, layer, method, size, steps, weights, dev, here)
                aslot = st.columns([1, 1])[0].empty()  # the accentuated photo, as large as the render
                if accent and accent.get("group") == i:
                    frames.append((aslot, lambda t, j=accent["id"]: _draw_job(j, "", t, "grown in the photo · ")))
    if _follow(frames):
        st.rerun()  # the finished page, without the Cancel button


def _accent(f, i: int, layer: str, method: str, size, steps, weights: str, dev: str, here) -> dict | None:
    """Submit the accent view of group ``i``: start from the photo and grow the group's direction in it."""
    vec = f.directions[i]
    try:
        photo, digest, png = start_photo(f.image)
        view = make_view("accent", layer, start=digest, direction=direction_digest(vec))
        spec = JobSpec(make_settings(layer, method, size, steps, None, 0, weights, view=view), top_channel(vec),
                       dev, start=png, direction=tuple(vec.tolist()))
        job = manager().submit_many([spec], session=session_id(), visitor=visitor_id(), tag="groups_accent")[0]
    except VizError as exc:
        st.error(app_words(exc))
        return None
    ss["grp_accent"] = {"here": here, "group": i, "id": job.id}
    return ss["grp_accent"]
