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


# On a phone Streamlit stacks every column, so a 6-wide grid page becomes 24 full-width images (11,000 px) and the
# first image sits below three screens of controls. Keep up to three columns side by side there instead.
SMALL_SCREENS = """<style>
@media (max-width: 640px) {
  .stMainBlockContainer { padding-top: 3rem; }
  .stMainBlockContainer h1 { font-size: 2rem; }
  .stMainBlockContainer [data-testid="stHorizontalBlock"] { flex-wrap: wrap !important; gap: 0.5rem !important; }
  .stMainBlockContainer [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {
    min-width: calc(33.3% - 0.5rem) !important; flex: 1 1 calc(33.3% - 0.5rem) !important; width: auto !important;
  }
}
</style>"""


# Streamlit keeps the theme a visitor chose in localStorage under a key named after the path the tab was opened
# at ("stActiveTheme-/gallery-v1"), so a link opened in a new tab forgot it. This script remembers the choice under
# one key for the whole app (when it is made in the main menu) and hands it to any path opened later (one reload).
THEME_SYNC = """<script>
(() => {
  if (window.vgg16AtlasTheme) return;
  window.vgg16AtlasTheme = true;
  const ls = window.localStorage, shared = "vgg16-atlas-theme";
  const first = (performance.getEntriesByType("navigation")[0] || {}).name || location.href;
  const prefix = `stActiveTheme-${new URL(first).pathname}-v`;  // Streamlit's key, "-v2" in 1.67
  const own = () => Object.keys(ls).find(k => k.startsWith(prefix) && /^[0-9]+$/.test(k.slice(prefix.length)));
  const chosen = JSON.parse(ls.getItem(shared) || "null");  // {key suffix, value} of the last choice anywhere
  if (chosen && ls.getItem(prefix + chosen.version) !== chosen.value && !sessionStorage.getItem(prefix)) {
    sessionStorage.setItem(prefix, "synced");  // at most one reload per tab
    ls.setItem(prefix + chosen.version, chosen.value);
    location.reload();
    return;
  }
  // a choice in the main menu (not Streamlit's own default write) becomes the shared one
  document.addEventListener("click", (event) => {
    if (!event.target.closest('[data-testid^="stMainMenuItem-theme-"]')) return;
    setTimeout(() => {
      const key = own();
      if (key) ls.setItem(shared, JSON.stringify({version: key.slice(prefix.length), value: ls.getItem(key)}));
    }, 300);
  }, true);
})();
</script>"""


def page_style() -> None:
    st.html(SMALL_SCREENS)
    st.html(THEME_SYNC, unsafe_allow_javascript=True)


@st.cache_resource(show_spinner=False, max_entries=4)
def _model(weights: str):
    from viz.model import load_model

    return load_model(weights, "cpu", channels_last=True)


def load_model_for(weights: str):
    """The frozen VGG16 conv base for a one-pass page (Your photo), loaded once per server, on CPU."""
    return _model(weights)


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
        mine = len(manager().session_jobs(session_id()))
        st.caption(f"Server: {stats['running']}/{stats['max_running']} generating, {stats['queued']} queued"
                   + (f" ({mine} of these yours)" if mine else "") + f" · {stats['cached']} results cached")


# the engine's messages name CLI flags; in the app they name the widget instead
APP_WORDS = {"use --device cpu or auto": "choose Device: cpu or auto in the sidebar",
             "or use --weights oxford": "or choose Weights: oxford in the sidebar",
             "--weights": "the Weights setting", "--device": "the Device setting", "(--count)": "(Images)",
             "--count": "Images", "--start": "the start photo", "--x and --y": "the position"}


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


def link_state(default_layer: str | None = "conv5_1"):
    """The URL's parameters, validated: each bad one is shown as one friendly warning and dropped from the URL."""
    link = parse_link(st.query_params.to_dict(), default_layer)
    for problem in link.problems:
        st.warning(f"Ignored part of the link: {problem}.", icon=":material/link_off:")
    for name in link.bad:
        st.query_params.pop(name, None)
    return link


PERSIST = {"persist_state": "session"}  # a visitor's choices survive a visit to another page


def seed_from_link(prefix: str, defaults: dict) -> None:
    """The form's values: a new link's (layer, channel, size, steps, method) when the URL changed since it was
    last applied, else what this visitor chose before (widgets persist across pages), else ``defaults``."""
    link = link_state(default_layer=None)
    ss = st.session_state
    for name, value in {"layer": "conv5_1", "channel": 104, **defaults}.items():
        ss.setdefault(f"{prefix}_{name}", value)
    given = {k: v for k, v in link.given().items() if k != "page"}
    if given and given != ss.get(f"_{prefix}_link"):
        for name, value in given.items():
            ss[f"{prefix}_{name}"] = value
        ss[f"_{prefix}_link"] = given


def remember_link(prefix: str, **values) -> None:
    """Put a submitted request in the URL (a shareable link) without it counting as a new link."""
    st.query_params.update({k: str(v) for k, v in values.items()})
    st.session_state[f"_{prefix}_link"] = values


def layer_picker(label: str, key: str, container=st) -> str:
    """A layer selectbox whose value lives in ``st.session_state[key]`` (set it first to choose the default)."""
    return container.selectbox(label, list(LAYER_NAMES), key=key, **PERSIST,
                               format_func=lambda n: f"{n} ({LAYERS[n].channels} ch, RF {LAYERS[n].receptive_field}px)")


def defaults_for(device_name: str) -> tuple[int, int]:
    """(size, steps): under ~30 s for conv5_1 on a laptop CPU; Lucid's 224 px x 512 steps on a GPU."""
    return (224, 512) if device_name.startswith("cuda") else (128, 128)


def generation_page(title: str, caption: str, prefix: str, **defaults) -> tuple[str, int, int]:
    """The top of a page that generates: title, caption, the device (the page stops with a message when it is
    not available), the form's values from the link or the visitor's last choice; returns (device, default
    size, default steps)."""
    st.title(title)
    st.caption(caption)
    dev = device()
    if dev is None:
        st.stop()
    size, steps = defaults_for(dev)
    seed_from_link(prefix, {"size": size, "steps": steps, **defaults})
    return dev, size, steps


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
        if _session_alive(sid) is False:  # the tab is gone (the server may keep its script running): stop, and
            return tick > 0  # stop vouching for it, so its jobs are dropped after VIZ_SESSION_TIMEOUT
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
        st.warning(app_words(exc), icon=":material/timer_off:")
        return False
    lim = m.limits
    st.caption(f"Estimated time on this server: {'instant (cached)' if seconds == 0 else 'about ' + fmt_seconds(seconds)}"
               f" · limits here: {fmt_seconds(lim.max_job_seconds)} and {min(lim.size_cap, 1024)} px per render")
    return True


FINAL_HELP = ("The channel's mean activation on the final image exactly as shown. The curve is measured during the "
              "optimization on randomly jittered, scaled and rotated copies (and, in the first steps, on a "
              "smaller image), so its last point is not the same number.")


def show_metrics(summary: dict, seconds: float | None, curve_last: float | None = None) -> None:
    """The metrics row of a result; says why the final activation and the curve's end differ when they do."""
    ratio, why = versus_photos(summary)
    final = summary["final_activation"]
    cols = st.columns(4)
    cols[0].metric("Final activation", f"{final:.4g}", help=FINAL_HELP)
    cols[1].metric("× best photo", ratio, help=f"{why} (the channel's strongest response at any position of the "
                                               "bundled photos)")
    cols[2].metric("HF share", f"{summary['hf_fraction']:.2f}",
                   help="High-frequency share of the image's spectrum (natural photos: below 0.22; noise: ~0.8)")
    cols[3].metric("Seconds", "n/a" if seconds is None else f"{seconds:.1f}")
    if curve_last is not None and abs(final - curve_last) > 0.05 * max(abs(final), abs(curve_last), 1e-6):
        st.caption(f"The curve ends at {curve_last:.4g}: it is measured on transformed copies during the "
                   f"optimization; the image as shown reaches {final:.4g}.")
    if summary["flags"]:
        # the flags are validated names; the evidence is text from a file: shown as plain text, never Markdown
        st.error(f"Flagged: {', '.join(plain(f) for f in summary['flags'])}", icon=":material/flag:")
        st.text(summary["evidence"])


LEGEND = """
- **N.N×** (× best photo): the image's activation (the channel's mean over the whole image) over the channel's
  strongest response at any single position of the photos that ship with scikit-image and scikit-learn. It is
  one number per image, the same on every page and at any size; above 1× the whole image excites the channel
  more than its best spot in any photo.
- **∞×**: no position of any photo activates the channel (its best is 0 or below) while the image does.
- **n/a**: neither the image nor any photo activates it, or the photo reference is unknown.
- **⚠ flags**: `dead` never positive, neither on photos nor after optimization; `no_rise` the objective did not
  rise; `blank` a nearly uniform image; `noise` mostly high-frequency noise. A flagged channel was retried once
  (another seed, twice the steps) before it was kept flagged.
- **Dotted line** in a curve: the channel's strongest response in the bundled photos, for scale.
- **Final activation** is measured on the final image as shown; the curve on transformed copies during the run.
"""


@st.cache_resource(show_spinner=False, max_entries=32)
def _examples(weights: str, layer: str):
    from viz.examples import read_layer, reference_dirs

    for d in reference_dirs(weights):
        try:
            return read_layer(d, layer)
        except VizError:
            continue
    return None


def show_examples(weights: str, layer: str, channel: int) -> None:
    """Dataset examples beside a visualization: the photo regions that excite the channel most, the strongest
    one in its photo, and the regions it responds to most negatively."""
    from viz.examples import example_tiles, in_context

    ex = _examples(weights, layer)
    if ex is None:
        st.caption(f"No dataset examples for {weights} yet: `python -m viz examples --weights {weights} "
                   "--images bundled` makes them.")
        return
    st.markdown(f"#### Real photos that make {layer}:{channel} fire")
    st.caption("Receptive-field crops of the strongest positions in the bundled photos (activation · photo); "
               "at two scales, so some crops cover most of a photo.")
    tiles = example_tiles(ex, channel, "top", 8)
    for col, (tile, caption) in zip(st.columns(8), tiles):
        col.image(tile, caption=caption, width="stretch")
    context = in_context(ex, channel)
    hates = example_tiles(ex, channel, "bottom", 4)
    left, right = st.columns([1, 1.4])
    if context is not None:
        left.image(context[0], caption=context[1], width="stretch")
    with right:
        st.markdown("**What it responds to most negatively**")
        for col, (tile, caption) in zip(st.columns(4), hates):
            col.image(tile, caption=caption, width="stretch")


def legend() -> None:
    with st.expander("How to read these numbers", icon=":material/help:"):
        st.markdown(LEGEND)


def plain(text: object) -> str:
    """``text`` for a Markdown widget, shown literally: a record's text can never become a link, an image or
    formatting (a hostile gallery file could otherwise make the browser fetch a remote image)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])", r"\\\1", str(text))


# Imported once per server process, after torch, plotly, pandas and streamlit: their ~0.5 M long-lived objects
# move out of the garbage collector's sight. Otherwise every full collection walks them all (0.3 s of CPU when
# idle; several seconds on a loaded 2-core machine, during which the server answers nothing, health checks
# included: the load test saw 5 s stalls).
gc.freeze()
