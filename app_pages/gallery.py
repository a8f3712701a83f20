"""Layer gallery: a paged grid of precomputed channel images; a channel's detail with its curve."""

import math

import streamlit as st

from app_pages._circuits import show_circuit_strips
from app_pages._forms import PERSIST, link_state
from app_pages._results import legend, linked_picture, plain, show_examples, show_kernel, show_metrics
from app_pages._server import gallery
from viz import LAYERS, VizError
from viz.atlas.metrics import versus_photos
from viz.atlas.records import recipe_note
from viz.base.images import as_png, decode_image, zoom_png
from viz.dashboard.figures import NO_TOOLBAR, OCTAVE_NOTE, curve_figure, octave_marks
from viz.dashboard.sheets import contact_sheet, layer_zip

PER_PAGE = 24
COLUMNS = 6
ss = st.session_state

st.title("Layer gallery")
g = gallery()
weights_list = g.weights()
if not weights_list:
    st.info("No precomputed gallery yet. Make one on the command line with `python -m viz precompute` (see "
            "Overview).")
    st.stop()

link = link_state(default_layer=None)
SHOWS, ORDERS = ("all", "flagged", "unflagged"), {"channel": "channel", "strongest": "strongest first"}
for name, allowed in (("show", SHOWS), ("order", tuple(ORDERS))):
    value = st.query_params.get(name)
    if value is not None and value not in allowed:
        st.warning(f"Ignored part of the link: {name} must be {' or '.join(allowed)}.", icon=":material/link_off:")
        st.query_params.pop(name)
    elif value is not None and value != ss.get(f"_gal_link_{name}"):  # a new link sets the filter and the order
        ss[f"gal_{name}"] = value
    ss[f"_gal_link_{name}"] = value
ss.setdefault("gal_show", ss.get("_gal_kept_show", "all"))  # the visitor's choice survives other pages
ss.setdefault("gal_order", ss.get("_gal_kept_order", "channel"))
if ss["gal_order"] not in ORDERS:
    ss["gal_order"] = "channel"
show, order = ss["gal_show"], ss["gal_order"]


def _to_page_one() -> None:
    ss["gal_page"] = 1
    st.query_params.pop("page", None)
    st.query_params.pop("channel", None)


c2, c3 = st.columns([2, 2])
weights = ss.get("g_weights", "oxford")  # one weights choice: the sidebar's
if weights not in weights_list:
    st.info(f"No precomputed gallery for the {weights} weights (channel numbers differ between weights): showing "
            f"{weights_list[0]}'s.", icon=":material/info:")
    weights = weights_list[0]
layers = g.all_layers(weights)
# A new link (the URL's layer changed since it was last applied) chooses the layer; else the visitor's choice.
if link.layer is not None and link.layer != ss.get("_gal_link_layer"):
    if link.layer in layers:
        ss["gal_layer"] = link.layer
        ss["gal_page"] = link.page or 1
    else:
        st.warning(f"No gallery for {link.layer} in {weights}: showing "
                   f"{ss.get('gal_layer') if ss.get('gal_layer') in layers else layers[-1]}.")
if ss.get("gal_layer") not in layers:
    ss["gal_layer"] = layers[-1]
layer = c2.selectbox("Layer", layers, key="gal_layer", on_change=_to_page_one)


def _pick_config() -> None:
    ss["_gal_config_pick"] = ss["gal_config"]  # the visitor's own choice (not a fallback made for another layer)
    _to_page_one()


# The configs holding this layer: the visitor's choice while it holds the layer, else the newest recipe's.
configs = g.configs_with(weights, layer)
picked = ss.get("_gal_config_pick")
ss["gal_config"] = picked if picked in configs else g.config_for(weights, layer)
if len(configs) > 1:  # a choice only where there is one (the caption under the filters names the config anyway)
    config = c3.selectbox("Config (method, size, steps)", configs, key="gal_config", on_change=_pick_config,
                          help="the galleries that hold this layer; a regenerated layer replaces the old one here "
                               "as soon as it is complete")
else:
    config = ss["gal_config"]
st.query_params["layer"] = layer
ss["_gal_link_layer"] = layer

try:
    view = g.layer(weights, config, layer)
except VizError as exc:
    st.error(str(exc))
    st.stop()
for problem in view.problems:
    st.warning(f"Skipped: {plain(problem)}", icon=":material/broken_image:")
if (note := recipe_note(view.settings)) is not None:
    st.info(note, icon=":material/history:")

# The channel in the URL opens its detail.
channel = link.channel if link.layer == layer else None
if channel is not None and channel not in view.records:
    st.warning(f"Channel {channel} of {layer} is not in this gallery.")
    st.query_params.pop("channel", None)
    channel = None


def _open(ch: int | None) -> None:
    if ch is None:
        st.query_params.pop("channel", None)
    else:
        st.query_params["channel"] = str(ch)


def _back_to_grid(page: int) -> None:
    st.query_params.pop("channel", None)
    st.query_params["page"] = str(page)
    ss["gal_page"] = ss["_gal_link_page"] = page


if channel is not None:
    rec = view.records[channel]
    st.query_params["channel"] = str(channel)
    chans = view.channels(show, order)
    if channel not in chans:  # opened from a link outside the filter: walk every channel
        chans = view.channels("all", order)
    i = chans.index(channel)
    nav = st.columns([1.3, 1, 1, 3])
    nav[0].button("← Back to the grid", key="back", on_click=_back_to_grid, args=(1 + i // PER_PAGE,),
                  help=f"page {1 + i // PER_PAGE}, where channel {channel} is")
    nav[1].button("‹ Previous", key="prev_ch", on_click=_open, args=(chans[i - 1] if i else None,), disabled=i == 0,
                  help=f"channel {chans[i - 1]}" if i else None)
    nav[2].button("Next ›", key="next_ch", on_click=_open, args=(chans[i + 1] if i + 1 < len(chans) else None,),
                  disabled=i + 1 == len(chans), help=f"channel {chans[i + 1]}" if i + 1 < len(chans) else None)
    settings = rec["settings"]
    bigger = max(224, 2 * int(settings.get("size", 96)))
    nav[3].page_link("app_pages/generator.py", label=f"Render it bigger ({bigger} px) in the Generator",
                     icon=":material/open_in_full:",
                     query_params={"layer": layer, "channel": str(channel), "size": str(bigger),
                                   "steps": str(settings.get("steps", 128)),
                                   "method": str(settings.get("method", "fourier"))})
    st.subheader(f"{layer} · channel {channel}")
    left, right = st.columns([1, 1.4])
    data = view.image_bytes(channel)
    if data is None:
        left.error("This image is missing or corrupted; the next precompute will redo it.")
    else:
        big, factor, side = zoom_png(data, 384)
        left.image(big, output_format="PNG",
                   caption=f"{side} px" + (f", shown {factor}× (each pixel a square)" if factor > 1 else ""))
        left.download_button("Download PNG", as_png(data), f"{weights}_{layer}_c{channel:04d}.png", "image/png")
    if layer == "conv1_1":
        show_kernel(left, weights, channel)
    marks = octave_marks(settings.get("method", ""), int(settings.get("steps", 0)))
    right.plotly_chart(curve_figure({"objective": (rec["history_steps"], rec["history"])}, rec["natural_max"],
                                    octaves=marks), key="detail_curve", config=NO_TOOLBAR)
    if marks:
        right.caption(OCTAVE_NOTE)
    with right:
        show_metrics({**rec, **rec["metrics"]}, rec["seconds"], curve_last=rec["history"][-1] if rec["history"]
                     else None, image=None if data is None else decode_image(data))
        with st.expander("Settings of this render (from its record)"):
            st.json({k: rec[k] for k in ("weights", "settings", "seed", "steps", "attempts", "device", "created")})
    show_circuit_strips(weights, layer, channel)
    show_examples(weights, layer, channel)
    legend()
    st.stop()

st.query_params.pop("channel", None)
f1, f2, f3 = st.columns([1.2, 1.3, 1.5])
show = f1.segmented_control("Show", SHOWS, key="gal_show") or "all"
order = f2.segmented_control("Order", tuple(ORDERS), format_func=ORDERS.get, key="gal_order") or "channel"
# another filter or order starts at page 1 (compared with what was shown, not by on_change: a segmented control
# re-created on the way back from a channel's detail may report a change that is none)
if (show, order) != (ss.get("_gal_kept_show", show), ss.get("_gal_kept_order", order)):
    _to_page_one()
for name, value, default in (("show", show, "all"), ("order", order, "channel")):  # the grid's state is a link
    if value == default:
        st.query_params.pop(name, None)
    else:
        st.query_params[name] = value
    ss[f"_gal_link_{name}"] = None if value == default else value
    ss[f"_gal_kept_{name}"] = value
chans = view.channels(show, order)
pages = max(1, math.ceil(len(chans) / PER_PAGE))
# the page: a new URL's (no page in it is page 1, so Back from page 2 reaches page 1), else the visitor's, kept
# within the pages there are
if link.page is not None and "_gal_link_page" not in ss or (link.page or 1) != ss.get("_gal_link_page",
                                                                                     link.page or 1):
    ss["gal_page"] = link.page or 1
ss["gal_page"] = min(max(1, int(ss.get("gal_page") or 1)), pages)
# the page goes into the URL (a history entry) before anything on the screen names it: a visitor who turns again
# as soon as the page shows (which stops this run) keeps every page seen in Back's history
if ss["gal_page"] > 1:
    st.query_params["page"] = str(ss["gal_page"])
else:
    st.query_params.pop("page", None)
goto = f3.number_input(f"Go to channel (0-{LAYERS[layer].channels - 1})", value=None, step=1, key="gal_goto",
                       placeholder="#", help="opens its detail")
if goto is not None:
    ss.pop("gal_goto")
    _open(int(goto))
    st.rerun()


def _turn(delta: int, to_top: bool = False) -> None:
    ss["gal_page"] = min(max(1, ss["gal_page"] + delta), pages)
    ss["_gal_to_top"] = to_top


def pager(where: str) -> int:
    p1, p2, p3 = st.columns([1, 2, 1])
    p1.button("‹ Previous page", key=f"prev_{where}", on_click=_turn, args=(-1, where == "bottom"),
              disabled=ss["gal_page"] <= 1, width="stretch")
    if where == "top":
        p2.number_input(f"Page (of {pages})", 1, pages, key="gal_page", label_visibility="collapsed", **PERSIST)
    else:
        p2.markdown(f"<div style='text-align:center'>Page {ss['gal_page']} of {pages}</div>", unsafe_allow_html=True)
    p3.button("Next page ›", key=f"next_{where}", on_click=_turn, args=(1, where == "bottom"),
              disabled=ss["gal_page"] >= pages, width="stretch")
    return ss["gal_page"]


st.caption(f"{len(chans)} of {len(view.records)} channels · {view.settings.get('method')} at "
           f"{view.settings.get('size')} px, {view.settings.get('steps')} steps · weights {weights}"
           + (f" · page {ss['gal_page']} of {pages}" if pages > 1 else ""))
if not chans:
    st.info(f"No {show} channels in {layer}." if show != "all" else f"No channels in {layer} yet.",
            icon=":material/filter_alt_off:")
if ss.pop("_gal_to_top", False):  # turned at the bottom: show the new page from its top
    st.html(f"<script>/* page {ss['gal_page']} */ document.querySelector('.stMain')?.scrollTo(0, 0)</script>",
            unsafe_allow_javascript=True)  # the page in it: each turn is a new element, so the script runs again
page = pager("top") if pages > 1 else 1
ss["_gal_link_page"] = page

shown = chans[(page - 1) * PER_PAGE: page * PER_PAGE]
grid_state = {k: str(v) for k, v in (("show", show), ("order", order), ("page", page))  # the detail keeps them
              if v not in ("all", "channel", 1)}
for row in range(0, len(shown), COLUMNS):
    cols = st.columns(COLUMNS)
    for col, ch in zip(cols, shown[row: row + COLUMNS]):
        rec = view.records[ch]
        data = view.image_bytes(ch)
        if data is None:
            col.warning(f"ch {ch}: image corrupted")
            continue
        ratio, why = versus_photos(rec, digits=1)
        label = f"ch {ch} · {ratio}" + (" ⚠" if rec["flags"] else "")
        # a flag's tooltip gives its evidence (what `noise` cannot tell apart, which photo threshold was passed)
        tip = (f"Flagged: {rec['evidence'] or ', '.join(rec['flags'])}" if rec["flags"] else why) + "; opens its detail"
        # picture and caption are real links to the channel's detail (click, middle-click, copy link all work);
        # the picture is the stored file itself, never re-encoded
        target = {"layer": layer, "channel": str(ch), **grid_state}
        linked_picture(col, data, "gallery", target, alt=f"{layer} channel {ch}", title=tip)
        col.page_link("app_pages/gallery.py", label=label, help=plain(tip), query_params=target, width="stretch")
if pages > 1:
    pager("bottom")

d1, d2 = st.columns(2)
d1.download_button("Download layer (zip)", lambda: layer_zip(view), f"{weights}_{config}_{layer}.zip",
                   "application/zip", key="dl_zip", disabled=not chans)
d2.download_button("Download contact sheet (PNG)", lambda: contact_sheet(view, channels=chans),
                   f"{weights}_{config}_{layer}_sheet.png", "image/png", key="dl_sheet", disabled=not chans)
legend()
