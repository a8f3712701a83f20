"""Issue 27: the direction objective and view, a photo's factors (NMF groups), their attribution, and the
``factors`` CLI subcommand."""

import json

import numpy as np
import pytest
import torch

from tests.helpers import cli
from viz import make_settings
from viz.atlas.factors import attribution, factorize, group_picture, photo_factors, upsampled
from viz.atlas.records import config_name
from viz.base.corpus import load_photo
from viz.base.errors import VizError
from viz.engine.objectives import as_direction, direction, direction_cossim, direction_digest, read_direction
from viz.engine.probe import Activations
from viz.engine.render import render, render_vis
from viz.engine.views import make_view, parse_view
from viz.serving.jobs import JobManager, JobSpec, wait


def small_photo(name="chelsea", side=48):
    from viz.base.images import thumbnail

    return thumbnail(load_photo(name), side)


# ------------------------------------------------------------------------------------------------ NMF
def synthetic_map(k=3, channels=32, side=16, seed=0):
    """A non-negative map (C, h, w) made of ``k`` known groups: each a random sparse direction over the
    channels, present in its own vertical band of the map (with soft edges that overlap the next band)."""
    rng = np.random.default_rng(seed)
    dirs = rng.random((k, channels)) * (rng.random((k, channels)) < 0.4)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    x = np.arange(side) + 0.5
    maps = np.stack([np.exp(-((x - (i + 0.5) * side / k) / (0.35 * side / k)) ** 2) for i in range(k)])
    maps = maps[:, None, :].repeat(side, axis=1) * (1 + rng.random((k, side, side)))  # (k, h, w)
    acts = np.einsum("khw,kc->chw", maps, dirs).astype(np.float32)
    return acts, maps, dirs


@pytest.mark.unit
@pytest.mark.parametrize("k,side", [(2, 16), (3, 16), (5, 16), (4, 96)])  # 96 x 96: fitted pooled, then refined
def test_nmf_recovers_known_groups(k, side):
    acts, maps, dirs = synthetic_map(k=k, side=side, seed=k)
    got_maps, got_dirs, shares, error = factorize(acts, k, seed=0)
    assert got_maps.shape == (k, side, side) and got_dirs.shape == (k, 32) and shares.shape == (k,)
    assert error < 0.02, error  # the map is exactly rank k and non-negative
    np.testing.assert_allclose(np.linalg.norm(got_dirs, axis=1), 1, atol=1e-5)
    cos = got_dirs @ dirs.T  # every true direction is found by one group, each group by one direction
    assert (cos.max(axis=0) > 0.98).all(), cos
    assert sorted(cos.argmax(axis=1).tolist()) == list(range(k))
    for i, j in enumerate(cos.argmax(axis=1)):  # ... in the place where it was put
        assert np.corrcoef(got_maps[i].ravel(), maps[j].ravel())[0, 1] > 0.98
    assert (np.diff(shares) <= 0).all() and abs(shares.sum() - 1) < 0.05  # largest first, the whole activation
    again = factorize(acts, k, seed=0)  # deterministic for a seed
    np.testing.assert_array_equal(again[1], got_dirs)


@pytest.mark.unit
@pytest.mark.parametrize("k,msg", [(1, "between 2 and 8"), (9, "between 2 and 8"), ("x", "whole number"),
                                   (2.5, "whole number")])
def test_k_out_of_range_is_one_line(k, msg):
    acts, _, _ = synthetic_map()
    with pytest.raises(VizError, match=msg):
        factorize(acts, k)


@pytest.mark.unit
@pytest.mark.parametrize("acts,msg", [
    (np.zeros((8, 4, 4), np.float32), "does not respond"),
    (-np.ones((8, 4, 4), np.float32), "non-negative"),
    (np.full((8, 4, 4), np.nan, np.float32), "NaN"),
    (np.ones((8, 4), np.float32), "channels, height, width"),
    (np.ones((8, 1, 2), np.float32), "at most 2 groups"),
])
def test_bad_maps_are_one_line(acts, msg):
    with pytest.raises(VizError, match=msg):
        factorize(acts, 3)


# ------------------------------------------------------------------------------------------- a photo
def test_photo_factors_and_their_picture(model):
    photo = small_photo()
    f = photo_factors(model, photo, "conv4_1", k=4, seed=1)
    h, w = f.image.shape[:2]
    assert h == 224 and w > 300  # the photo page's input: short side 224, whatever the upload (a wide cat)
    assert f.k == 4 and f.maps.shape == (4, 28, w // 8) and f.directions.shape == (4, 512)
    assert (f.directions >= 0).all() and (np.diff(f.shares) <= 0).all() and 0.2 < f.shares.sum() < 1.2
    top = f.top_channels(0, 5)
    assert len(top) == 5 and [w for _, w in top] == sorted([w for _, w in top], reverse=True)
    assert top[0][0] == int(np.argmax(f.directions[0]))
    again = photo_factors(model, photo, "conv4_1", k=4, seed=1)
    np.testing.assert_array_equal(again.directions, f.directions)
    rec = f.record()
    assert rec["k"] == 4 and len(rec["top_channels"]) == 4 and len(rec["shares"]) == 4
    json.dumps(rec, allow_nan=False)
    picture = group_picture(f)
    assert picture.shape == f.image.shape and picture.dtype == np.uint8
    assert upsampled(f.maps, (224, w)).shape == (4, 224, w)


@pytest.mark.parametrize("image,msg", [(np.zeros((40, 40), np.uint8), "RGB image"),
                                       (np.zeros((4, 40, 3), np.uint8), "at least 8"),
                                       ("chelsea", "RGB image")])
def test_bad_photos_are_one_line(model, image, msg):
    with pytest.raises(VizError, match=msg):
        photo_factors(model, image, "conv3_1", k=3)


def test_attribution_finds_the_pixels_of_a_group(model):
    """Gradient x input of a group falls where the group's own map is: more inside its strongest fifth than
    outside, and it correlates more with its own map than with the other groups'."""
    photo = small_photo("coffee", 64)
    f = photo_factors(model, photo, "conv4_3", k=3)
    corr = np.zeros((f.k, f.k))
    for g in range(f.k):
        attr = attribution(model, photo, "conv4_3", vector=f.directions[g])
        assert attr.shape == f.image.shape[:2] and np.isfinite(attr).all()
        pos = np.clip(attr, 0, None)
        maps = upsampled(f.maps, attr.shape)
        inside = maps[g] > np.percentile(maps[g], 80)
        assert pos[inside].mean() > 1.2 * pos[~inside].mean(), g
        corr[g] = [np.corrcoef(pos.ravel(), m.ravel())[0, 1] for m in maps]
    assert np.diag(corr).mean() > corr[~np.eye(f.k, dtype=bool)].mean() + 0.1, corr
    chan = attribution(model, photo, "conv4_3", channel=f.top_channels(0)[0][0])
    assert chan.shape == attr.shape and np.abs(chan).sum() > 0
    with pytest.raises(VizError, match="out of range"):
        attribution(model, photo, "conv4_3", channel=512)
    with pytest.raises(VizError, match="one group's direction or one channel"):
        attribution(model, photo, "conv4_3")


# ---------------------------------------------------------------------------------------- direction
@pytest.mark.unit
def test_direction_is_the_dot_product_and_cosine_weighting_prefers_alignment():
    v = np.zeros(4, np.float32)
    v[:2] = [3, 4]  # made unit length: (0.6, 0.8, 0, 0)
    a = torch.zeros(2, 4, 2, 2)
    a[0, 0], a[0, 1] = 6.0, 8.0  # along v: dot 10, cosine 1
    a[1, 0], a[1, 1], a[1, 2] = 6.0, 8.0, 30.0  # the same dot product, mostly elsewhere: cosine 0.32
    acts = Activations({"conv1_1": F_pad(a)}, {"conv1_1": None}, torch.zeros(2, 3, 4, 4))
    plain = direction("conv1_1", F_pad_vec(v))(acts)
    torch.testing.assert_close(plain, torch.tensor([10.0, 10.0]))
    cos = direction_cossim("conv1_1", F_pad_vec(v), power=1)(acts)
    assert cos[0] == pytest.approx(10.0) and cos[1] == pytest.approx(10 * 10 / np.sqrt(1000), rel=1e-4)
    d = direction("conv1_1", F_pad_vec(2 * v))  # only the direction counts
    assert d.description == direction("conv1_1", F_pad_vec(v)).description
    assert d.description.startswith("direction(conv1_1, ") and d.reads == {"conv1_1": None}
    assert direction_cossim("conv1_1", F_pad_vec(v), 2).description.endswith(", pow=2)")


def F_pad(a):
    """conv1_1 has 64 channels: the 4 test channels first, the rest 0."""
    out = torch.zeros(a.shape[0], 64, *a.shape[2:])
    out[:, : a.shape[1]] = a
    return out


def F_pad_vec(v):
    out = np.zeros(64, np.float32)
    out[: len(v)] = v
    return out


def test_gradient_descent_raises_a_direction_and_the_cosine_variant_differs(model):
    photo = small_photo()
    vec = photo_factors(model, photo, "conv3_1", k=3).directions[0]
    runs = {}
    for name, obj in {"dot": direction("conv3_1", vec), "cos": direction_cossim("conv3_1", vec, power=2)}.items():
        out = render_vis(model, obj, steps=24, size=32, seed=0)
        runs[name] = out
        h = np.asarray(out.history)[:, 0]
        assert h[-3:].mean() > h[:3].mean() + 0.25 * abs(h[:3].mean()), (name, h[:3], h[-3:])
    dot, cos = (runs[n].images for n in ("dot", "cos"))
    assert (dot - cos).abs().mean() > 0.01  # a different objective, a different image
    x = torch.cat([dot, cos])
    from viz.engine.probe import Probe

    acts = Probe(model, {"conv3_1": None})(x)
    plain, weighted = direction("conv3_1", vec)(acts), direction_cossim("conv3_1", vec, 2)(acts)
    ratio = (weighted / plain).tolist()
    assert ratio[1] > ratio[0]  # the cosine variant's image is more aligned with the direction


@pytest.mark.unit
@pytest.mark.parametrize("vec,msg", [([1.0, 2.0], "has 2 values; the layer has 64"),
                                     (np.zeros(64), "all zero"), (np.full(64, np.nan), "NaN"),
                                     (np.ones((2, 64)), "1-D"), ("abc", "numbers")])
def test_bad_vectors_are_one_line(vec, msg):
    with pytest.raises(VizError, match=msg):
        as_direction(vec, 64)
    with pytest.raises(VizError, match=msg):
        direction("conv1_1", vec)


@pytest.mark.unit
def test_read_direction_from_text_and_file(tmp_path):
    v = read_direction("3:0.7, 25:0.3", "conv1_1")
    assert v.shape == (64,) and v[3] > v[25] > 0 and np.count_nonzero(v) == 2
    np.save(tmp_path / "d.npy", v * 5)
    assert direction_digest(read_direction(str(tmp_path / "d.npy"), "conv1_1")) == direction_digest(v)
    np.save(tmp_path / "bad.npy", np.ones(10))
    for spec, msg in [("3", "write it like"), ("3:x", "must be a number"), ("3:1,3:2", "twice"),
                      ("99:1", "out of range"), ("3:nan", "NaN"), (str(tmp_path / "no.npy"), "no direction file"),
                      (str(tmp_path / "bad.npy"), "has 10 values")]:
        with pytest.raises(VizError, match=msg):
            read_direction(spec, "conv1_1")


@pytest.mark.unit
def test_direction_view_names_its_digest_everywhere():
    a, b = read_direction("3:1", "conv1_1"), read_direction("4:1", "conv1_1")
    da, db = direction_digest(a), direction_digest(b)
    for text in (f"direction({da})", f"direction({da},cos=2)", f"accent(0123456789abcdef,w=1,dir={da})"):
        assert parse_view(text, "conv1_1").describe() == text
    sa, sb = (make_settings("conv1_1", size=32, steps=4, view=f"direction({d})") for d in (da, db))
    assert sa.view == f"direction({da})" and config_name(sa) != config_name(sb)
    assert JobSpec(sa, 3, direction=tuple(a)).key != JobSpec(sb, 4, direction=tuple(b)).key
    for kw, msg in [(dict(kind="direction"), "needs a direction"), (dict(kind="channel", direction=da), "not channel"),
                    (dict(kind="direction", direction="xyz"), "digest"),
                    (dict(kind="direction", direction=da, cos=9), "between 0 and 8"),
                    (dict(kind="neuron", cos=1), "cosine power")]:
        with pytest.raises(VizError, match=msg):
            make_view(layer="conv1_1", **kw)


def test_direction_jobs_are_shared_and_checked(model):
    """A direction render goes through the job manager like any render: the same vector asked by two visitors is
    one job; the wrong vector for a digest is one line."""
    vec = read_direction("3:0.7,25:0.3", "conv2_1")
    s = make_settings("conv2_1", size=32, steps=4, view=f"direction({direction_digest(vec)})")
    m = JobManager(max_per_session=2)
    try:
        a = m.submit_many([JobSpec(s, 3, direction=tuple(vec.tolist()))], session="A")[0]
        b = m.submit_many([JobSpec(s, 3, direction=tuple(vec.tolist()))], session="B")[0]
        assert a is b
        wait(a, 120)
        assert a.state == "done", a.error
        assert a.result.natural is None and np.isfinite(a.result.final_activation)
        wrong = read_direction("3:1", "conv2_1")
        c = m.submit_many([JobSpec(s, 4, direction=tuple(wrong.tolist()))], session="C")[0]
        wait(c, 120)
        assert c.state == "error" and "not the one the view's settings name" in c.error
    finally:
        m.shutdown()
    with pytest.raises(VizError, match="needs its direction vector"):
        render(s, [3], "cpu")


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_factors_writes_maps_directions_and_renders(tmp_path):
    from PIL import Image

    photo = tmp_path / "cat.png"
    Image.fromarray(small_photo()).save(photo)
    out = tmp_path / "out"
    p = cli("factors", "--image", str(photo), "--layer", "conv3_1", "--k", "2", "--render", "--size", "32",
                "--steps", "4", "--weights", "oxford", "--out", str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert (rec["layer"], rec["k"]) == ("conv3_1", 2) and len(rec["shares"]) == 2 and len(rec["top_channels"]) == 2
    maps, dirs = np.load(out / "maps.npy"), np.load(out / "directions.npy")
    assert maps.shape[:2] == (2, 56) and dirs.shape == (2, 256)
    assert rec["directions_digest"] == [direction_digest(d) for d in dirs]
    with Image.open(out / "groups.png") as im:
        assert im.size[1] == 224 and im.size[0] // 4 == maps.shape[2]
    assert [r["out"] for r in rec["renders"]] == [str(out / "group-0.png"), str(out / "group-1.png")]
    for r, d in zip(rec["renders"], rec["directions_digest"]):
        assert r["view"] == f"direction({d})"
        with Image.open(r["out"]) as im:
            assert im.size == (32, 32)
    vec = tmp_path / "g0.npy"  # a group's direction rendered again from its file
    np.save(vec, dirs[0])
    p = cli("render", "--layer", "conv3_1", "--objective", "direction", "--direction", str(vec), "--size", "32",
                "--steps", "4", "--out", str(tmp_path / "d.png"))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["view"] == rec["renders"][0]["view"] and r["channel"] == int(np.argmax(dirs[0]))


@pytest.mark.parametrize("args,msg", [
    (["factors", "--image", "chelsea", "--layer", "conv3_1", "--k", "9"], "between 2 and 8"),
    (["factors", "--image", "chelsea", "--layer", "conv9_9"], "unknown layer"),
    (["factors", "--image", "/no/such.jpg", "--layer", "conv3_1"], "no photo"),
    (["factors", "--image", "BROKEN", "--layer", "conv3_1"], "not a readable image"),
    (["factors", "--layer", "conv3_1"], "required"),
    (["render", "--layer", "conv3_1", "--objective", "direction"], "needs --direction"),
    (["render", "--layer", "conv3_1", "--objective", "direction", "--direction", "3:0"], "all zero"),
    (["render", "--layer", "conv3_1", "--objective", "direction", "--direction", "3:1,999:1"], "out of range"),
    (["render", "--layer", "conv3_1", "--channel", "3", "--direction", "3:1"], "is for --objective direction"),
    (["render", "--layer", "conv3_1", "--objective", "direction", "--direction", "3:1", "--cos", "x"], "cosine"),
])
def test_cli_bad_arguments_one_line(tmp_path, args, msg):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    args = [str(broken) if a == "BROKEN" else a for a in args]
    out = tmp_path / ("o.png" if args[0] == "render" else "o")
    p = cli(*args, "--out", str(out))
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and msg in p.stderr, p.stderr


# --------------------------------------------------------------------------------------------- the page
def test_your_photo_page_groups(tmp_path):
    """The Your photo page's Groups: the coloured photo and its legend, a map and 5 linked channels per group,
    the groups rendered as jobs, one group accentuated in the photo, and the pixels of a group or a channel."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from viz.serving.jobs import get_manager

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("app_pages/photo.py")
    at.run()
    at.selectbox(key="photo_layer").set_value("conv4_3")
    at.slider(key="grp_k").set_value(3)
    at.number_input(key="grp_size").set_value(32)
    at.number_input(key="grp_steps").set_value(4)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Groups: the few things conv4_3 sees" in s.value for s in at.subheader)
    legend = "\n".join(m.value for m in at.markdown)
    assert all(f"**Group {i}**" in legend for i in (1, 2, 3)) and "Group 4" not in legend
    captions = [c for i in at.get("image") for c in i.captions]
    assert any("coloured by the group strongest there" in c for c in captions)
    assert sum(c == "where it is" for c in captions) == 3
    assert any("gradient × input" in m.value for m in at.markdown)
    links = [el.proto for el in at.get("page_link")]
    group_links = [lk for lk in links if lk.help.startswith("channel ")]
    assert len(group_links) == 15 and all("layer=conv4_3" in lk.query_string for lk in group_links)
    assert any("Estimated time on this server" in c.value for c in at.caption)

    at.button(key="grp_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ids = at.session_state["grp_jobs"]["ids"]
    jobs = [get_manager().get(i) for i in ids]
    assert len(jobs) == 3 and all(wait(j, 120).state == "done" for j in jobs), [j.error for j in jobs]
    assert [j.settings.view.startswith("direction(") for j in jobs] == [True] * 3
    assert len({j.settings.view for j in jobs}) == 3
    at.run()
    assert not at.exception
    assert sum(c == "32 px · 4 steps" or c == "from the result cache" for i in at.get("image") for c in i.captions) == 3

    at.button(key="grp_accent_1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = get_manager().get(at.session_state["grp_accent"]["id"])
    assert wait(job, 120).state == "done", job.error
    assert job.settings.view.startswith("accent(") and f"dir={jobs[1].settings.view[10:-1]}" in job.settings.view

    at.selectbox(key="grp_target").set_value(at.selectbox(key="grp_target").options[-1]).run()  # a channel
    assert not at.exception, [e.value for e in at.exception]
    assert any("The pixels whose change" in c for i in at.get("image") for c in i.captions)


def test_generator_direction_view():
    """The Generator renders a direction typed as channel weights; a bad one is one line under the form."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from viz.serving.jobs import get_manager

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=300)
    at.query_params["layer"], at.query_params["channel"] = "conv2_1", "3"
    at.run()
    at.switch_page("app_pages/generator.py")
    at.run()
    at.number_input(key="gen_size").set_value(32)
    at.number_input(key="gen_steps").set_value(4)
    at.segmented_control(key="gen_view").set_value("direction")
    at.run()
    at.text_input(key="gen_dir").set_value("3:0.2,9:0.8")
    at.number_input(key="gen_cos").set_value(1.0)
    at.run()
    [b for b in at.button if b.label == "Generate"][0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    job = get_manager().get(at.session_state["gen_job"])
    digest = direction_digest(read_direction("3:0.2,9:0.8", "conv2_1"))
    assert job.settings.view == f"direction({digest},cos=1)" and job.channel == 9
    assert wait(job, 120).state == "done", job.error
    at.run()
    assert not at.exception
    at.text_input(key="gen_dir").set_value("3:0,9:0")
    at.run()
    assert [e.value for e in at.error] == ["the direction is all zero: it points nowhere"]
