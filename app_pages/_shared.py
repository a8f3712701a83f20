"""Widgets and cached resources shared by the pages (Streamlit only; all computing lives in ``viz``)."""

from __future__ import annotations

import gc
import os
import re
import time
from pathlib import Path

import streamlit as st

from viz import DEFAULT_METHOD, LAYER_NAMES, LAYERS, METHODS, VizError
from viz.device import resolve_device
from viz.gallery import Gallery
from viz.jobs import get_manager
from viz.links import parse_link
from viz.metrics import versus_photos
from viz.weights import default_weights_name

DEFAULT_GALLERY = Path(__file__).resolve().parent.parent / "gallery"
WEIGHT_CHOICES = ["oxford", "torchvision"]


def gallery_root() -> Path:
    """``$VIZ_GALLERY`` or the gallery committed beside the app."""
    return Path(os.environ.get("VIZ_GALLERY") or DEFAULT_GALLERY)


@st.cache_resource(show_spinner=False, max_entries=4)
def _gallery(root: str) -> Gallery:
    return Gallery(root)


def gallery() -> Gallery:
    return _gallery(str(gallery_root()))


def _session_alive(session_id: str) -> bool | None:
    """Whether a session's browser tab is still connected (None outside a running server, e.g. AppTest)."""
    from streamlit import runtime

    return runtime.get_instance().is_active_session(session_id) if runtime.exists() else None


def manager():
    """The server's one job manager; it asks Streamlit's runtime which visitors are still connected."""
    return get_manager(session_alive=_session_alive)


def session_id() -> str:
    """This visitor's session (jobs are owned by sessions: cancel and limits are per visitor)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def sidebar_controls() -> None:
    """Global controls (weights, device, default method), kept in session state across pages."""
    ss = st.session_state
    ss.setdefault("g_weights", default_weights_name())
    ss.setdefault("g_device", "auto")
    ss.setdefault("g_method", DEFAULT_METHOD)
    with st.sidebar:
        st.markdown("### Settings")
        st.selectbox("Weights", WEIGHT_CHOICES, key="g_weights",
                     help="oxford: the original VGG16 ImageNet weights (CC BY 4.0), always available offline. "
                          "torchvision: IMAGENET1K_V1, needs its checkpoint cached or a connection once. "
                          "Channel numbers differ between the two.")
        st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="g_device")
        st.selectbox("Default method", list(METHODS), key="g_method",
                     format_func=lambda m: f"{m} (modern)" if m == "fourier" else f"{m} (naive baseline)")
        stats = manager().stats()
        st.caption(f"Server: {stats['running']}/{stats['max_running']} generating, {stats['queued']} queued, "
                   f"{stats['cached']} results cached")


def device() -> str | None:
    """The chosen device as a string, or None (with a message shown) when it is not available here."""
    try:
        return str(resolve_device(st.session_state.get("g_device", "auto")))
    except VizError as exc:
        st.error(f"{exc}")
        return None


def link_state(default_layer: str = "conv5_1"):
    """Layer/channel from the URL, validated; problems are shown as one friendly warning each."""
    link = parse_link(st.query_params.to_dict(), default_layer)
    for problem in link.problems:
        st.warning(f"Ignored part of the link: {problem}.", icon=":material/link_off:")
    return link


def seed_from_link(prefix: str) -> None:
    """On a session's first visit, take ``<prefix>_layer`` / ``<prefix>_channel`` from the URL (validated)."""
    link = link_state()
    ss = st.session_state
    if not ss.get(f"_{prefix}_linked"):
        ss[f"{prefix}_layer"] = link.layer or "conv5_1"
        ss[f"{prefix}_channel"] = link.channel if link.channel is not None else 104
        ss[f"_{prefix}_linked"] = True


def layer_picker(label: str, key: str, container=st) -> str:
    """A layer selectbox whose value lives in ``st.session_state[key]`` (set it first to choose the default)."""
    return container.selectbox(label, list(LAYER_NAMES), key=key,
                               format_func=lambda n: f"{n} ({LAYERS[n].channels} ch, RF {LAYERS[n].receptive_field}px)")


def defaults_for(device_name: str) -> tuple[int, int]:
    """(size, steps): under ~30 s for conv5_1 on a laptop CPU; Lucid's 224 px x 512 steps on a GPU."""
    return (224, 512) if device_name.startswith("cuda") else (128, 128)


def generation_page(title: str, caption: str, prefix: str) -> tuple[str, int, int]:
    """The top of a page that generates: title, caption, the device (the page stops with a message when it is
    not available), the link's layer/channel on a first visit; returns (device, default size, default steps)."""
    st.title(title)
    st.caption(caption)
    dev = device()
    if dev is None:
        st.stop()
    seed_from_link(prefix)
    return (dev, *defaults_for(dev))


def follow(draw, every: float = 1.0) -> bool:
    """Stream live frames from this script run: ``draw(tick)`` renders one frame into a fresh container and
    returns True once there is nothing left to wait for. Returns whether it had to wait.

    Not ``st.fragment(run_every=...)``: with 8 sessions on 2 cores a fragment's browser-side timer was seen to
    stop, leaving a session on its first frame for good. A script run that keeps redrawing its own placeholder
    needs no timer; any click stops it and starts an ordinary rerun.
    """
    slot = st.empty()
    tick = 0
    sid = session_id()
    while True:
        manager().heartbeat(sid)  # this visitor still watches: its jobs keep running
        with slot.container():
            if draw(tick):
                return tick > 0
        tick += 1
        time.sleep(every)


def job_progress(job, position: int) -> None:
    """Queue position, or a progress bar with ETA, for a job that is not finished."""
    from viz.budget import fmt_seconds
    from viz.progress import fmt_time

    if job.state == "queued":
        st.info(f"Queued: position {position} — starts when the server has a free slot (this render: about "
                f"{fmt_seconds(job.estimate)}).", icon=":material/hourglass:")
        return
    frac = job.step / max(job.steps, 1)
    eta = "…" if job.eta is None else fmt_time(job.eta)
    st.progress(frac, text=f"step {job.step}/{job.steps} · {fmt_time(job.elapsed)} elapsed · ETA {eta}")


def estimate_line(specs) -> bool:
    """Under a generation form: the request's estimated time on this server, or why it would be refused.
    Returns whether the request fits."""
    from viz.budget import fmt_seconds

    m = manager()
    try:
        seconds = sum(m.check_budget(spec) for spec in specs)
    except VizError as exc:
        st.warning(str(exc), icon=":material/timer_off:")
        return False
    lim = m.limits
    st.caption(f"Estimated time on this server: {'instant (cached)' if seconds == 0 else 'about ' + fmt_seconds(seconds)}"
               f" · limits here: {fmt_seconds(lim.max_job_seconds)} and {min(lim.size_cap, 1024)} px per render")
    return True


def show_metrics(summary: dict, seconds: float | None) -> None:
    ratio, why = versus_photos(summary)
    cols = st.columns(4)
    cols[0].metric("Final activation", f"{summary['final_activation']:.4g}")
    cols[1].metric("× best photo", ratio, help=f"{why} (natural-photo crops of the same size)")
    cols[2].metric("High-freq. share", f"{summary['hf_fraction']:.2f}", help="Natural photos: below 0.22")
    cols[3].metric("Seconds", "n/a" if seconds is None else f"{seconds:.1f}")
    if summary["flags"]:
        # the flags are validated names; the evidence is text from a file: shown as plain text, never Markdown
        st.error(f"Flagged: {', '.join(plain(f) for f in summary['flags'])}", icon=":material/flag:")
        st.text(summary["evidence"])


def plain(text: object) -> str:
    """``text`` for a Markdown widget, shown literally: a record's text can never become a link, an image or
    formatting (a hostile gallery file could otherwise make the browser fetch a remote image)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])", r"\\\1", str(text))


# Imported once per server process, after torch, plotly, pandas and streamlit: their ~0.5 M long-lived objects
# move out of the garbage collector's sight. Otherwise every full collection walks them all (0.3 s of CPU when
# idle; several seconds on a loaded 2-core machine, during which the server answers nothing, health checks
# included: the load test saw 5 s stalls).
gc.freeze()
