"""The server's shared resources for the pages: the gallery, the job manager, this visitor's session, the model
for one-pass pages, the chosen device, and the app's wording of engine messages (Streamlit only)."""

from __future__ import annotations

import gc
import hashlib
import os
from pathlib import Path

import streamlit as st

from viz import VizError
from viz.atlas.gallery import Gallery
from viz.engine.device import resolve_device
from viz.serving.jobs import get_manager

DEFAULT_GALLERY = Path(__file__).resolve().parent.parent / "gallery"


def gallery_root() -> Path:
    """``$VIZ_GALLERY`` or the gallery committed beside the app."""
    return Path(os.environ.get("VIZ_GALLERY") or DEFAULT_GALLERY)


@st.cache_resource(show_spinner=False, max_entries=4)
def _gallery(root: str) -> Gallery:
    return Gallery(root)


def gallery() -> Gallery:
    return _gallery(str(gallery_root()))


def session_alive(session_id: str) -> bool | None:
    """Whether a session's browser tab is still connected (None outside a running server, e.g. AppTest)."""
    from streamlit import runtime

    return runtime.get_instance().is_active_session(session_id) if runtime.exists() else None


def manager():
    """The server's one job manager; it asks Streamlit's runtime which visitors are still connected."""
    return get_manager(session_alive=session_alive)


def session_id() -> str:
    """This visitor's session (jobs are owned by sessions: cancel and limits are per visitor)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def visitor_id() -> str:
    """This visitor's browser, the same in all its tabs: a digest of the token in Streamlit's XSRF cookie (one per
    browser; each page load masks it anew, so the mask is taken off first), else the session. Limits per visitor
    count every tab of one browser."""
    try:
        cookie = st.context.cookies.get("_streamlit_xsrf")
    except Exception:  # outside a running server
        cookie = None
    if not isinstance(cookie, str):  # AppTest has no browser: each session is its own visitor
        return session_id()
    parts = cookie.split("|")
    try:  # tornado's version 2: "2|mask|masked token|time", the token XOR the 4-byte mask repeated
        mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        token = bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
    except (IndexError, ValueError):
        return session_id()
    return hashlib.sha256(token).hexdigest()[:16]


@st.cache_resource(show_spinner=False, max_entries=4)
def _model(weights: str):
    from viz.engine.model import load_model

    return load_model(weights, "cpu", channels_last=True)


def load_model_for(weights: str):
    """The frozen VGG16 conv base for a one-pass page (Your photo), loaded once per server, on CPU."""
    return _model(weights)


# the engine's messages name CLI flags; in the app they name the widget instead
APP_WORDS = {"use --device cpu or auto": "choose Device: cpu or auto in the sidebar",
             "or use --weights oxford": "or choose Weights: oxford in the sidebar",
             "--weights": "the Weights setting", "--device": "the Device setting", "(--count)": "(Images)",
             "--count": "Images", "--start": "the start photo", "--x and --y": "the position",
             "(--direction FILE.npy or 104:0.7,25:0.3)": "(channel weights like 104:0.7,25:0.3)"}


def app_words(message: object) -> str:
    text = str(message)
    for cli, app in APP_WORDS.items():
        text = text.replace(cli, app)
    return text


def device() -> str | None:
    """The chosen device as a string, or None (with a message shown) when it is not available here."""
    try:
        return str(resolve_device(st.session_state.get("g_device", "auto")))
    except VizError as exc:
        st.error(app_words(exc))
        return None


# Imported once per server process, after torch, plotly, pandas and streamlit: their ~0.5 M long-lived objects
# move out of the garbage collector's sight. Otherwise every full collection walks them all (0.3 s of CPU when
# idle; several seconds on a loaded 2-core machine, during which the server answers nothing, health checks
# included: the load test saw 5 s stalls).
gc.freeze()
