"""VGG16 Feature Atlas: the Streamlit dashboard (``streamlit run app.py``). This file only routes."""

import os

# Idle OpenMP threads sleep instead of spinning, so the server's own thread gets the CPU between render steps
# (read when torch loads, hence before any viz import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

import viz.figures  # noqa: F401  (imports pandas before plotly first runs; see viz/figures.py)
from app_pages._shared import sidebar_controls

st.set_page_config(page_title="VGG16 Feature Atlas", page_icon=":material/grid_view:", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
    st.Page("app_pages/gallery.py", title="Layer gallery", icon=":material/grid_view:", url_path="gallery"),
    st.Page("app_pages/generator.py", title="Generator", icon=":material/auto_awesome:", url_path="generator"),
    st.Page("app_pages/compare.py", title="Compare methods", icon=":material/compare:", url_path="compare"),
]
page = st.navigation(PAGES)
sidebar_controls()
page.run()
