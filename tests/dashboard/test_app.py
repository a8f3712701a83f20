"""AppTest for every page, including deep links and hostile query parameters."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import TINY, serve_gallery
from viz import LAYERS, make_settings
from viz.atlas.precompute import precompute
from viz.atlas.records import config_name
from viz.serving.jobs import get_manager, wait

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page != "app_pages/overview.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [s.value for s in at.subheader] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def test_overview(tiny_gallery):
    at = open_page("app_pages/overview.py")
    assert at.title[0].value == "VGG16 Feature Atlas"
    assert len(at.table) == 1 and len(at.table[0].value) == 13  # the whole layer table, no empty row
    assert any("oxford / fourier-32px-4st" in m.value for m in at.markdown)  # the galleries
    assert "fourier" in texts(at) and "seed" in texts(at)
    assert at.selectbox(key="g_weights").value in ("oxford", "torchvision")


def test_gallery_grid_and_channel_detail(tiny_gallery):
    at = open_page("app_pages/gallery.py", layer="conv1_1")
    links = {label: q for label, q in _links(at) if label.startswith("ch ")}
    assert any(lbl.startswith("ch 0") for lbl in links) and any(lbl.startswith("ch 3") for lbl in links)
    target = [q for label, q in links.items() if label.startswith("ch 2")][0]
    assert target == {"layer": "conv1_1", "channel": "2"}  # each caption is a link to its channel's detail
    # and so is each picture, a plain <a href> (middle-click and "copy link" work)
    assert any('href="gallery?layer=conv1_1&amp;channel=2"' in m.value or 'href="gallery?layer=conv1_1&channel=2"'
               in m.value for m in at.markdown)
    at.query_params["channel"] = "2"
    at.run()
    assert not at.exception
    assert any("conv1_1 · channel 2" in s.value for s in at.subheader)
    assert {m.label for m in at.metric} >= {"Final activation", "× best photo", "HF share", "Clipped",
                                            "Colourfulness", "Colour distance"}
    assert at.query_params["channel"] == ["2"] or at.query_params["channel"] == "2"
    # conv1_1 is linear in the pixels: its detail shows the 3x3 RGB kernel it computes
    assert any("3×3 RGB kernel" in c for i in at.get("image") for c in i.captions), "no kernel picture"


def test_gallery_deep_link_opens_detail(tiny_gallery):
    at = open_page("app_pages/gallery.py", layer="conv1_1", channel="3")
    assert any("conv1_1 · channel 3" in s.value for s in at.subheader)


@pytest.mark.parametrize("params,expect", [
    ({"layer": "../../etc/passwd"}, "unknown layer"),
    ({"layer": "conv1_1", "channel": "-1"}, "channel"),
    ({"layer": "conv1_1", "channel": "abc"}, "channel"),
    ({"layer": "conv1_1", "channel": "63"}, "not in this gallery"),
    ({"layer": "conv4_1"}, "No gallery for conv4_1"),
])
def test_gallery_bad_links_are_friendly(tiny_gallery, params, expect):
    at = open_page("app_pages/gallery.py", **params)
    assert any(expect in w.value for w in at.warning), [w.value for w in at.warning]


def test_gallery_reports_corrupted_image(tiny_gallery):
    img = Path(tiny_gallery) / "oxford" / config_name(TINY) / "conv1_1" / "c0001.png"
    good = img.read_bytes()
    img.write_bytes(good[:30])
    try:
        at = open_page("app_pages/gallery.py", layer="conv1_1")
        assert any("ch 1: image corrupted" in w.value for w in at.warning)
    finally:
        img.write_bytes(good)


def _submit(at, label):
    [b for b in at.button if b.label == label][0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_generator_runs_and_shows_result(tiny_gallery):
    at = open_page("app_pages/generator.py", layer="conv2_1", channel="3")
    assert at.selectbox(key="gen_layer").value == "conv2_1" and at.number_input(key="gen_channel").value == 3
    at.number_input(key="gen_size").set_value(32)
    at.number_input(key="gen_steps").set_value(6)
    _submit(at, "Generate")
    job = get_manager().get(at.session_state["gen_job"])
    assert job is not None and (job.settings.layer, job.channel, job.settings.size) == ("conv2_1", 3, 32)
    wait(job, 120)
    at.run()
    assert job.state == "done"
    assert {m.label for m in at.metric} >= {"Final activation", "× best photo"}
    assert any(b.label == "Download PNG" for b in at.get("download_button"))


def test_generator_maco_shows_its_attribution_map(tiny_gallery):
    at = open_page("app_pages/generator.py", layer="conv3_1", channel="4")
    at.selectbox(key="gen_method").set_value("maco")
    at.number_input(key="gen_size").set_value(32)
    at.number_input(key="gen_steps").set_value(6)
    _submit(at, "Generate")
    job = get_manager().get(at.session_state["gen_job"])
    assert job is not None and job.settings.method == "maco"
    wait(job, 120)
    at.run()
    assert job.state == "done" and job.result.attribution is not None
    assert job.result.attribution.shape == job.result.image.shape
    assert any("Attribution map" in e.label for e in at.expander)
    assert {m.label for m in at.metric} >= {"Clipped", "Colourfulness"}


def test_a_gallery_of_an_older_recipe_says_so(tmp_path, monkeypatch):
    """A layer made by an older recipe version than today's is labelled, not passed off as what renders make."""
    import shutil

    from viz.atlas.precompute import write_manifest
    from viz.atlas.records import LayerDir

    root = tmp_path / "g"
    precompute(root, TINY, {"conv1_1": [0, 1]}, device="cpu", retries=0)
    d = LayerDir(root, "oxford", config_name(TINY), "conv1_1")
    for rec_path in d.path.glob("c*.json"):
        rec = json.loads(rec_path.read_text())
        rec["settings"]["recipe"] = TINY.recipe - 1
        rec_path.write_text(json.dumps(rec))
    write_manifest(d, {**TINY.to_dict(), "recipe": TINY.recipe - 1})
    monkeypatch.setenv("VIZ_GALLERY", str(root))
    at = open_page("app_pages/gallery.py", layer="conv1_1")
    assert any(f"recipe version {TINY.recipe - 1}" in i.value for i in at.info), [i.value for i in at.info]
    shutil.rmtree(root)


def test_a_regenerated_layer_replaces_the_old_one_as_soon_as_it_is_complete(tmp_path, monkeypatch):
    """Issue 22: a gallery regenerated layer by layer (here: the old recipe's config holds conv1_1 and conv2_1, the
    new one, in JPEG at another size, conv1_1 only). Every page shows each layer from the newest recipe's config
    that holds it, the old config stays for the others, and a visitor's own choice of config sticks."""
    import shutil

    from viz.atlas.gallery import Gallery
    from viz.atlas.precompute import write_manifest
    from viz.atlas.records import LayerDir

    root = tmp_path / "g"
    precompute(root, TINY, {"conv1_1": [0, 1], "conv2_1": [0, 1]}, device="cpu", retries=0)
    for layer in ("conv1_1", "conv2_1"):  # made by the recipe before today's
        d = LayerDir(root, "oxford", config_name(TINY), layer)
        for rec_path in d.path.glob("c*.json"):
            rec = json.loads(rec_path.read_text())
            rec["settings"]["recipe"] = TINY.recipe - 1
            rec_path.write_text(json.dumps(rec))
        write_manifest(d, {**TINY.to_dict(), "layer": layer, "recipe": TINY.recipe - 1})
    new = make_settings("conv1_1", size=48, steps=4)
    precompute(root, new, {"conv1_1": [0, 1]}, device="cpu", retries=0, image_format="jpeg")
    old_cfg, new_cfg = config_name(TINY), config_name(new)
    g = Gallery(root)
    assert g.all_layers("oxford") == ["conv1_1", "conv2_1"]
    assert g.config_for("oxford", "conv1_1") == new_cfg and g.config_for("oxford", "conv2_1") == old_cfg
    monkeypatch.setenv("VIZ_GALLERY", str(root))

    at = open_page("app_pages/gallery.py", layer="conv1_1")
    assert at.selectbox(key="gal_config").value == new_cfg and at.selectbox(key="gal_config").options == sorted(
        [old_cfg, new_cfg])
    assert not at.info and any("data:image/jpeg;base64," in m.value for m in at.markdown)
    at.selectbox(key="gal_layer").select("conv2_1").run()  # only the old config holds it: shown, and labelled
    assert not [b for b in at.selectbox if b.key == "gal_config"]  # one config: nothing to choose, no widget
    assert any(f"{TINY.size} px, {TINY.steps} steps" in c.value for c in at.caption)  # the caption names it
    assert any(f"recipe version {TINY.recipe - 1}" in i.value for i in at.info)
    at.selectbox(key="gal_layer").select("conv1_1").run()  # back: the new one again (the old was no one's choice)
    assert at.selectbox(key="gal_config").value == new_cfg
    at.selectbox(key="gal_config").select(old_cfg).run()  # the visitor's choice sticks while it holds the layer
    at.selectbox(key="gal_layer").select("conv2_1").run()
    at.selectbox(key="gal_layer").select("conv1_1").run()
    assert not at.exception and at.selectbox(key="gal_config").value == old_cfg

    at = open_page("app_pages/overview.py")
    # under each layer's name: its gallery's size and recipe version, the config's name in the caption's help
    captions = [(c.value, c.proto.help) for c in at.caption]
    assert (f"64 ch · RF 3 px  \n{new.size} px · v{new.recipe}", new_cfg) in captions, captions  # conv1_1: the new
    assert (f"128 ch · RF 10 px  \n{TINY.size} px · v{TINY.recipe - 1}", old_cfg) in captions, captions  # conv2_1
    shutil.rmtree(root)


@pytest.mark.parametrize("page, prefix, button", [("generator", "gen", "Generate"), ("compare", "cmp", "Render both")])
def test_generation_pages_reject_out_of_range_channel(tiny_gallery, page, prefix, button):
    at = open_page(f"app_pages/{page}.py")
    at.selectbox(key=f"{prefix}_layer").set_value("conv1_1")
    at.number_input(key=f"{prefix}_channel").set_value(100)
    _submit(at, button)
    assert [e.value for e in at.error] == ["channel 100 is out of range: conv1_1 has channels 0 to 63"]
    assert not at.exception


def test_compare_renders_both_methods(tiny_gallery):
    at = open_page("app_pages/compare.py", layer="conv3_1", channel="5")
    at.number_input(key="cmp_size").set_value(32)
    at.number_input(key="cmp_steps").set_value(8)
    at.multiselect(key="cmp_snaps").set_value([])
    _submit(at, "Render both")
    jobs = {side: get_manager().get(i) for side, i in at.session_state["cmp_jobs"].items()}
    assert {side: j.settings.method for side, j in jobs.items()} == {"left": "seed", "right": "fourier"}
    for j in jobs.values():
        wait(j, 120)
    at.run()
    assert [m.label for m in at.metric].count("Final activation") == 2
    assert "seed" in json.dumps([s.value for s in at.markdown]) and "fourier" in json.dumps([s.value for s in at.markdown])


def _links(at) -> list[tuple[str, dict]]:
    """The page links on the page: (label, query parameters)."""
    return [(pl.proto.label, dict(pl.proto.query_string and
                                  [kv.split("=", 1) for kv in pl.proto.query_string.split("&")] or []))
            for pl in at.get("page_link")]


def test_channel_detail_shows_what_builds_it_and_what_it_feeds(tiny_gallery):
    at = open_page("app_pages/gallery.py", layer="conv1_1", channel="3")
    assert any("Built from" in m.value and "input" in m.value and "by weight" in m.value for m in at.markdown)
    assert any("Feeds into" in m.value and "conv1_2" in m.value for m in at.markdown)
    colours = [m.value for m in at.markdown if m.value in ("red", "green", "blue")]
    assert sorted(colours) == ["blue", "green", "red"]  # conv1_1's inputs are the colour planes
    targets = [(label, q) for label, q in _links(at) if label.startswith("conv1_2:")]
    assert len(targets) == 8 and all(q["layer"] == "conv1_2" and q["channel"] == label.split(":")[1]
                                     for label, q in targets)
    assert sum("excites" in c for i in at.get("image") for c in i.captions) >= 5  # the kernels' heat maps
    circuit_link = [q for label, q in _links(at) if label.startswith("Open its circuit")]
    assert circuit_link == [{"layer": "conv1_1", "channel": "3", "by": "weight"}]
    # the other measure: chosen on the page, kept in the URL
    at.segmented_control(key="detail_by").set_value("contribution").run()
    assert not at.exception
    assert any("by contribution on photos" in m.value for m in at.markdown)
    assert at.query_params["by"] in (["contribution"], "contribution")
    assert any("pre-activation" in c.value for c in at.caption)


def test_circuit_page_from_a_link(tiny_gallery):
    at = open_page("app_pages/circuit.py", layer="conv5_1", channel="104", by="contribution", depth="2")
    assert (at.selectbox(key="cir_layer").value, at.number_input(key="cir_channel").value) == ("conv5_1", 104)
    assert at.segmented_control(key="cir_by").value == "contribution"
    assert len(at.get("plotly_chart")) == 1
    walk = [(label, q) for label, q in _links(at) if q.get("layer") in ("conv4_3", "conv4_2", "conv5_2")]
    layers = {q["layer"] for _, q in walk}
    assert layers == {"conv4_3", "conv4_2", "conv5_2"}  # two levels down, one up
    assert all(q["by"] == "contribution" and q["depth"] == "2" for _, q in walk)
    assert len([1 for _, q in walk if q["layer"] == "conv4_3"]) == 4
    # one level below only
    at.segmented_control(key="cir_depth").set_value(1).run()
    assert not at.exception
    assert not [1 for _, q in _links(at) if q.get("layer") == "conv4_2"]
    assert at.query_params["depth"] in (["1"], "1")


@pytest.mark.parametrize("params,expect", [
    ({"layer": "conv5_1", "channel": "104", "by": "beauty"}, "by must be weight or contribution"),
    ({"layer": "conv5_1", "channel": "104", "depth": "9"}, "depth must be 1 or 2"),
    ({"layer": "conv9_1"}, "unknown layer"),
    ({"layer": "conv5_1", "channel": "9999"}, "out of range"),
])
def test_circuit_page_bad_links_are_friendly(tiny_gallery, params, expect):
    at = open_page("app_pages/circuit.py", **params)
    assert any(expect in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(at.get("plotly_chart")) == 1  # and the page still shows a circuit


def test_circuit_page_at_the_bottom_of_the_network(tiny_gallery):
    at = open_page("app_pages/circuit.py", layer="conv1_2", channel="0", depth="2")
    # its inputs' inputs are the photo's colour planes, each a node of its own (the page's caption names red and
    # blue whatever the layer, so the words alone prove nothing)
    assert sorted(m.value for m in at.markdown if m.value in ("red", "green", "blue")) == ["blue", "green", "red"]


@pytest.fixture(scope="module")
def paged_gallery(tmp_path_factory):
    """30 channels of conv1_1: two pages of the grid."""
    root = tmp_path_factory.mktemp("paged")
    precompute(root, make_settings("conv1_1", "fourier", size=32, steps=2), {"conv1_1": list(range(30))},
               device="cpu", retries=0)
    yield from serve_gallery(root)


def _grid(at) -> list[int]:
    return [int(label.split()[1]) for label, _ in _links(at) if label.startswith("ch ")]


def _param(at, name):
    value = at.query_params.get(name)
    return value[0] if isinstance(value, list) else value


def test_gallery_order_and_filter_live_in_the_url(paged_gallery):
    from viz.atlas.gallery import Gallery

    view = Gallery(paged_gallery).layer("oxford", config_name(make_settings("conv1_1", "fourier", size=32,
                                                                            steps=2)), "conv1_1")
    strongest = view.channels("all", "strongest")
    at = open_page("app_pages/gallery.py", layer="conv1_1", order="strongest")
    assert at.segmented_control(key="gal_order").value == "strongest"
    assert _grid(at) == strongest[:24] and strongest != sorted(strongest)
    at.segmented_control(key="gal_show").set_value("unflagged").run()
    assert _param(at, "show") == "unflagged" and _param(at, "order") == "strongest"
    at.segmented_control(key="gal_order").set_value("channel").run()
    assert _param(at, "order") is None  # the default is not spelled out
    at = open_page("app_pages/gallery.py", layer="conv1_1", order="sideways", show="some")
    assert any("order must be channel or strongest" in w.value for w in at.warning)
    assert any("show must be all or flagged or unflagged" in w.value for w in at.warning)


def test_a_flagged_channels_tooltip_gives_its_evidence(paged_gallery):
    from viz.atlas.gallery import Gallery

    view = Gallery(paged_gallery).layer("oxford", config_name(make_settings("conv1_1", "fourier", size=32,
                                                                            steps=2)), "conv1_1")
    flagged = view.channels("flagged", "channel")
    assert flagged, "two steps at 32 px should leave some channel flagged"
    at = open_page("app_pages/gallery.py", layer="conv1_1", show="flagged")
    helps = {int(pl.proto.label.split()[1]): pl.proto.help for pl in at.get("page_link")
             if pl.proto.label.startswith("ch ")}
    assert sorted(helps) == flagged[:24]
    for ch, text in helps.items():  # the reason, not only the flag's name (shown as plain text: escaped Markdown)
        assert view.records[ch]["evidence"] and view.records[ch]["evidence"] in text.replace("\\", ""), (ch, text)


def test_detail_walks_the_grids_order_and_returns_to_its_page(paged_gallery):
    from viz.atlas.gallery import Gallery

    view = Gallery(paged_gallery).layer("oxford", config_name(make_settings("conv1_1", "fourier", size=32,
                                                                            steps=2)), "conv1_1")
    strongest = view.channels("all", "strongest")
    here = strongest[25]  # on page 2 of the strongest-first grid
    at = open_page("app_pages/gallery.py", layer="conv1_1", order="strongest", channel=str(here))
    assert at.button(key="next_ch").proto.help == f"channel {strongest[26]}"
    assert at.button(key="prev_ch").proto.help == f"channel {strongest[24]}"
    at.button(key="next_ch").click().run()
    assert _param(at, "channel") == str(strongest[26])
    at.button(key="back").click().run()
    assert not at.exception
    assert _param(at, "channel") is None and _param(at, "page") == "2"
    assert strongest[26] in _grid(at) and _grid(at) == strongest[24:]
    # in channel order, channel 3 is on page 1
    at = open_page("app_pages/gallery.py", **{"layer": "conv1_1", "channel": "3"})
    at.query_params["page"] = "2"  # a stale page in the link
    at.run()
    at.button(key="back").click().run()
    assert _param(at, "page") is None and 3 in _grid(at)  # page 1: not spelled out


def test_the_generators_view_and_options_are_a_link(tiny_gallery):
    at = open_page("app_pages/generator.py", layer="conv3_1", channel="7", view="neuron", x="0.25", y="0.75")
    assert at.segmented_control(key="gen_view").value == "neuron"
    assert (at.slider(key="gen_x").value, at.slider(key="gen_y").value) == (0.25, 0.75)
    at.segmented_control(key="gen_view").set_value("diversity").run()
    assert _param(at, "view") == "diversity" and _param(at, "n") == "4" and _param(at, "x") is None
    at.number_input(key="gen_count").set_value(6).run()
    assert _param(at, "n") == "6"
    # the same link in a new session shows the same view
    again = open_page("app_pages/generator.py", layer="conv3_1", channel="7", view="diversity", n="6")
    assert again.segmented_control(key="gen_view").value == "diversity"
    assert again.number_input(key="gen_count").value == 6
    # the size field's help gives this server's cap for the method and the six images, not the one-image cap
    from viz.serving.jobs import get_manager

    lim = get_manager().limits
    cap, one = lim.side_cap("fourier", 6), lim.side_cap("fourier", 1)
    assert cap < one
    assert again.number_input(key="gen_size").proto.help == f"16-1024 px; this server renders at most {cap} px " \
                                                            "(fourier, 6 images at once)"
    mix = open_page("app_pages/generator.py", layer="conv5_1", view="mix", mix="104+0.5*25")
    assert mix.text_input(key="gen_mix").value == "104+0.5*25"
    assert mix.number_input(key="gen_channel").proto.disabled  # the mix names its own channels
    bad = open_page("app_pages/generator.py", view="sideways", x="7")
    assert sum("Ignored part of the link" in w.value for w in bad.warning) == 2


def test_compares_two_sides_are_a_link(tiny_gallery):
    at = open_page("app_pages/compare.py", layer="conv3_1", channel="7", left_method="maco", right_view="negative")
    assert at.selectbox(key="cmp_left_method").value == "maco"
    assert at.selectbox(key="cmp_right_view").value == "negative"
    assert _param(at, "right_method") == "fourier" and _param(at, "left_view") == "channel"
    at.selectbox(key="cmp_left_view").set_value("negative").run()
    assert _param(at, "left_view") == "negative"
    # the size help gives the smaller cap of the two sides: a 4-image diversity on the left, one image on the right
    from viz.serving.jobs import get_manager

    at.selectbox(key="cmp_left_method").set_value("fourier").run()
    at.selectbox(key="cmp_left_view").set_value("diversity").run()
    cap = get_manager().limits.side_cap("fourier", 4)
    assert at.number_input(key="cmp_size").proto.help == f"16-1024 px; this server renders at most {cap} px " \
                                                          "(fourier, 4 images at once)"
    bad = open_page("app_pages/compare.py", left_method="magic")
    assert any("left_method" in w.value for w in bad.warning)


@pytest.mark.parametrize("query", [{"channel": "99999"}, {"channel": "-1"}, {"channel": "1e3"},
                                   {"layer": "conv1_1", "channel": "100"}])
def test_a_bad_channel_in_a_link_is_one_warning_and_leaves_the_url(tiny_gallery, query):
    """Issue 24: a channel the page's layer does not have (with or without a layer in the link) is one warning
    naming it, is dropped from the URL, and the form's channel fits the layer (never a second error about the
    channel the form had before)."""
    at = open_page("app_pages/generator.py", **query)
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and warnings[0].startswith("Ignored part of the link: channel"), warnings
    assert query["channel"] in warnings[0]
    assert "channel" not in at.query_params
    layer = at.selectbox(key="gen_layer").value
    assert at.number_input(key="gen_channel").value < LAYERS[layer].channels
    assert not at.error and not at.exception
