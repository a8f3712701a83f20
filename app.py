"""VGG16 Feature Atlas: the Streamlit dashboard (``streamlit run app.py``). This file tunes the server process
and routes."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning, so the server's own thread gets the CPU between render steps
# (read when torch loads, hence before any viz import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The server thread waits for the GIL behind every session's script thread; handing it over every 1 ms instead
# of 5 ms cut the load test's slowest health check from a median of 1.7 s to 1.1 s over 7-8 runs each.
sys.setswitchinterval(0.001)

import streamlit as st  # noqa: E402

import viz.dashboard.figures  # noqa: F401  (imports pandas before plotly first runs; see viz/dashboard/figures.py)
from app_pages._chrome import page_style, server_line, sidebar_controls

# the favicon is served by the app itself (a Material icon name would make every browser fetch it from Google)
FAVICON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app_pages", "favicon.png")
st.set_page_config(page_title="VGG16 Feature Atlas", page_icon=FAVICON, layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", url_path="home", default=True),
    # the default page is served at "/" only (Streamlit answers its own url_path with "Page not found"); this
    # hidden twin serves the "/overview" links people share
    st.Page("app_pages/overview.py", title="Overview", url_path="overview", visibility="hidden"),
    st.Page("app_pages/gallery.py", title="Layer gallery", icon=":material/grid_view:", url_path="gallery"),
    st.Page("app_pages/generator.py", title="Generator", icon=":material/auto_awesome:", url_path="generator"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("app_pages/photo.py", title="Your photo", icon=":material/photo_camera:", url_path="photo"),
    st.Page("app_pages/circuit.py", title="Circuit", icon=":material/account_tree:", url_path="circuit"),
]
page = st.navigation(PAGES)
page_style()
sidebar_controls()
page.run()
server_line()  # after what the page submitted or cancelled
