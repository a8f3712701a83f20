"""What every page shares around its content: small-screen layout, the theme kept across tabs, and the sidebar's
global settings (Streamlit only)."""

from __future__ import annotations

import threading

import streamlit as st

from app_pages._server import manager, session_id
from viz import DEFAULT_METHOD, METHODS
from viz.engine.weights import default_weights_name, torchvision_checkpoint

METHOD_WORDS = {"fourier": "modern", "maco": "magnitude-constrained", "seed": "naive baseline"}
WEIGHT_CHOICES = ["oxford", "torchvision"]

# Widgets that take a whole line on a phone, never cut short: a page's Layer choice ("conv5_1 (5"), the circuit's
# "Rank the links" ("by contribu") and the gallery's Show and Order ("flagg", "str"); keyed widgets carry an
# st-key-KEY class.
FULL_LINE_KEYS = ("gen_layer", "cmp_layer", "photo_layer", "cir_layer", "cir_by", "gal_show", "gal_order")
_FULL_LINE = ", ".join(f".st-key-{k}" for k in FULL_LINE_KEYS)


# On a phone Streamlit stacks every column, so a 6-wide grid page becomes 24 full-width images (11,000 px) and the
# first image sits below three screens of controls. Keep up to three columns side by side there instead.
SMALL_SCREENS = """<style>
/* visitors get no developer tool (Deploy and Rerun are gone with toolbarMode = "viewer"; this is the last one) */
[data-testid="stMainMenuItem-recordScreencast"] { display: none !important; }
@media (max-width: 640px) {
  .stMainBlockContainer { padding-top: 3rem; }
  .stMainBlockContainer h1 { font-size: 2rem; }
  .stMainBlockContainer [data-testid="stHorizontalBlock"] { flex-wrap: wrap !important; gap: 0.5rem !important; }
  .stMainBlockContainer [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {
    min-width: calc(33.3% - 0.5rem) !important; flex: 1 1 calc(33.3% - 0.5rem) !important; width: auto !important;
  }
  /* two side by side (a picture and its curve, a form's halves): one above the other */
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"]:nth-child(2):last-child)
      > [data-testid="stColumn"] { min-width: 100% !important; flex-basis: 100% !important; }
  /* four (a detail's buttons, Your photo's tiles, a row of metrics): two by two, nothing cut */
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"]:nth-child(4):last-child)
      > [data-testid="stColumn"] { min-width: calc(50% - 0.5rem) !important; flex-basis: calc(50% - 0.5rem) !important; }
  /* a metrics row inside a column (three numbers): two per line */
  .stMainBlockContainer [data-testid="stColumn"] [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"]:nth-child(3):last-child)
      > [data-testid="stColumn"] { min-width: calc(50% - 0.5rem) !important; flex-basis: calc(50% - 0.5rem) !important; }
  /* the Overview's strips (a layer's name and 8 pictures): the name and 5 pictures */
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"]:nth-child(9):last-child)
      > [data-testid="stColumn"]:nth-child(n+7) { display: none !important; }
  /* on lines of their own, never cut short: the keyed widgets listed above */
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"] :is(FULL_LINE))
      > [data-testid="stColumn"]:has(:is(FULL_LINE)) {
    min-width: 100% !important; flex-basis: 100% !important;
  }
  /* the gallery's pager: both buttons whole ("‹ Previous page"), the page between them narrow */
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"] :is(.st-key-next_top,
      .st-key-next_bottom)) > [data-testid="stColumn"] { min-width: 0 !important; flex: 1 1 38% !important; }
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"] :is(.st-key-next_top,
      .st-key-next_bottom)) > [data-testid="stColumn"]:nth-child(2) { flex: 0 0 18% !important; }
  /* a link's label (captions on the Overview, its page links) wraps instead of being cut to "Browse prec…" */
  .stMainBlockContainer [data-testid="stPageLink"] a, .stMainBlockContainer [data-testid="stPageLink"] a * {
    white-space: normal !important; overflow: visible !important; text-overflow: clip !important; height: auto !important;
  }
  /* a row of links only (the Overview's "Browse…", "Generate…", "Compare…"): one per line, no word broken */
  .stMainBlockContainer [data-testid="stHorizontalBlock"]:has([data-testid="stPageLink"]):not(:has(img))
      > [data-testid="stColumn"] { min-width: 100% !important; flex-basis: 100% !important; }
  /* an empty column (a place kept for a widget that is not needed, as the gallery's config choice when there
     is one config) takes no line of its own */
  .stMainBlockContainer [data-testid="stColumn"]:not(:has([data-testid="stElementContainer"])) { display: none !important; }
  /* the numbers of a metric never cut to "4…" */
  .stMainBlockContainer [data-testid="stMetricValue"] { font-size: 1.6rem; }
}
</style>""".replace("FULL_LINE", _FULL_LINE)


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


def sidebar_controls() -> None:
    """Global controls (weights, device, default method), kept in session state across pages."""
    ss = st.session_state
    # torchvision's weights are offered once their checkpoint is on this server: choosing them never starts a
    # 528 MB download behind the visitor's back (the line under the selector says how to get them)
    choices = WEIGHT_CHOICES if torchvision_checkpoint().is_file() else ["oxford"]
    if ss.get("g_weights") not in choices:
        ss.pop("g_weights", None)
    ss.setdefault("g_weights", default_weights_name())
    ss.setdefault("g_device", "auto")
    ss.setdefault("g_method", DEFAULT_METHOD)
    with st.sidebar:
        st.markdown("### Settings")
        st.selectbox("Weights", choices, key="g_weights",
                     help="oxford: the original VGG16 ImageNet weights (CC BY 4.0), always available offline. "
                          "torchvision: IMAGENET1K_V1, offered once its checkpoint is on the server. Channel "
                          "numbers differ between the two. Every page uses this choice.")
        if len(choices) == 1:
            st.caption("torchvision's weights are not on this server (a 528 MB download, once, by its operator: "
                       "`python -m viz render --weights torchvision ...`).")
        st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="g_device")
        st.selectbox("Default method", list(METHODS), key="g_method",
                     format_func=lambda m: f"{m} ({METHOD_WORDS.get(m, 'custom')})")
        _run.server_line = st.empty()
    server_line()


_run = threading.local()  # this script run's sidebar slot (each run has its own thread)


def server_line() -> None:
    """The sidebar's line on the server's state, redrawn in place: after the page has submitted or cancelled (the
    sidebar is drawn before the page) and on every live frame, so it agrees with what the page shows."""
    slot = getattr(_run, "server_line", None)
    if slot is None:
        return
    stats = manager().stats()
    mine = len(manager().session_jobs(session_id()))
    slot.caption(f"Server: {stats['running']}/{stats['max_running']} generating, {stats['queued']} queued"
                 + (f" ({mine} of these yours)" if mine else "") + f" · {stats['cached']} results cached"
                 + (f" · {manager().notice}" if manager().notice else ""))
