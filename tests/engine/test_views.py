"""Views (neuron, negative, diversity, mix, accent): engine, settings and keys, CLI and the app's pages."""

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.dashboard.test_app import _submit, open_page
from tests.helpers import cli
from viz import make_settings
from viz.atlas.records import config_name
from viz.base.corpus import load_photo
from viz.base.errors import VizError
from viz.engine.layers import get_layer
from viz.engine.render import render
from viz.engine.views import make_view, parse_view, start_photo
from viz.serving.jobs import JobSpec, get_manager, strip, wait

LAYER, CH, SIZE, STEPS = "conv4_1", 17, 40, 16


def settings(view: str, **kw):
    return make_settings(LAYER, "fourier", kw.pop("size", SIZE), kw.pop("steps", STEPS), device=torch.device("cpu"),
                         view=view, **kw)


def centre_value(model, image: np.ndarray, channel: int, x: float = 0.5, y: float = 0.5) -> float:
    from viz.engine.objectives import position

    t = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    m = model.cut(get_layer(LAYER))(t)[0, channel]
    return float(m[position(m.shape[0], y), position(m.shape[1], x)])


@pytest.mark.parametrize("text", ["channel", "negative", "neuron(x=0.25,y=1)", "diversity(n=3,w=2)",
                                  "mix(104+0.5*25-3)", "mix(104~25,n=5)", "accent(0123456789abcdef,w=0.5)"])
def test_views_are_written_and_read_back(text):
    v = parse_view(text, "conv5_1")
    assert parse_view(v.describe(), "conv5_1") == v
    if v.kind not in ("mix", "accent"):  # these need their channels or photo
        assert parse_view(v.kind, "conv5_1").kind == v.kind


@pytest.mark.parametrize("kw,msg", [
    (dict(kind="neuron", count=3), "--count"),
    (dict(kind="channel", x=0.3), "--x and --y"),
    (dict(kind="neuron", x="1.5"), "between 0 and 1"),
    (dict(kind="diversity", count=1), "between 2 and 16"),
    (dict(kind="mix", mix="104+zz"), "cannot read the mix"),
    (dict(kind="mix", mix="104+25", count=3), "A~B"),
    (dict(kind="mix", mix="999"), "out of range"),
    (dict(kind="accent"), "starts from a photo"),
    (dict(kind="channel", start="0123456789abcdef"), "accent view"),
    (dict(kind="diversity", weight="nan"), "weight"),
    (dict(kind="magic"), "unknown view"),
])
def test_bad_view_combinations_say_one_line(kw, msg):
    with pytest.raises(VizError, match=msg):
        make_view(kw.pop("kind"), "conv5_1", **kw)


def test_views_never_share_a_result_or_a_gallery():
    views = ["channel", "negative", "neuron(x=0.5,y=0.5)", "neuron(x=0.2,y=0.5)", "diversity(n=2,w=1)"]
    all_settings = [settings(v) for v in views]
    assert len({config_name(s) for s in all_settings}) == len(views)
    assert len({JobSpec(s, CH).key for s in all_settings}) == len(views)
    assert "view" not in settings("channel").to_dict()  # records made before views still match
    assert config_name(settings("channel")) == f"fourier-{SIZE}px-{STEPS}st"


def test_neuron_raises_its_own_position_more_than_the_channel_view_does(model):
    n = render(settings("neuron(x=0.25,y=0.25)"), [CH], "cpu")
    c = render(settings("channel"), [CH], "cpu")
    assert centre_value(model, n.images[0], CH, 0.25, 0.25) > centre_value(model, c.images[0], CH, 0.25, 0.25)
    assert n.history[-1, 0] > n.history[0, 0]


def test_negative_lowers_the_channel(model):
    neg = render(settings("negative"), [CH], "cpu")
    pos = render(settings("channel"), [CH], "cpu")
    assert neg.final_activation[0] < 0 < pos.final_activation[0]
    assert neg.final_activation[0] < pos.final_activation[0] - 1


def test_diversity_gives_different_images_of_one_channel():
    r = render(settings("diversity(n=3,w=1)"), [CH], "cpu")
    assert r.images.shape == (3, SIZE, SIZE, 3) and r.channels == [CH] * 3
    assert (r.final_activation > 0).all()

    def spread(images):
        return np.mean([np.abs(images[i].astype(int) - images[j]).mean() for i, j in ((0, 1), (0, 2), (1, 2))])

    assert spread(r.images) > 5
    # the images differ by their starts (keyed per image) even with next to no diversity term; the term pushes
    # them further apart (here 92 against 74 of 255 on average)
    weak = render(settings("diversity(n=3,w=0.001)"), [CH], "cpu")
    assert spread(r.images) > 1.1 * spread(weak.images), (spread(r.images), spread(weak.images))


def test_mix_sums_channels_and_interpolates(model):
    a, b = 17, 40
    mix = render(settings(f"mix({a}+{b})"), [0], "cpu")
    assert mix.channels == [a]
    from viz.engine.render import channel_activation

    t = torch.from_numpy(mix.images).permute(0, 3, 1, 2).float() / 255
    both = channel_activation(model, LAYER, t, [a]) + channel_activation(model, LAYER, t, [b])
    assert mix.history[-1, 0] > mix.history[0, 0] and both[0] > 0
    r = render(settings(f"mix({a}~{b},n=3)"), [a], "cpu")
    assert r.channels == [a, a, b]  # each image is filed (and measured) under the channel it leans to
    t = torch.from_numpy(r.images).permute(0, 3, 1, 2).float() / 255
    to_a = channel_activation(model, LAYER, t, [a] * 3) - channel_activation(model, LAYER, t, [b] * 3)
    assert to_a[0] > to_a[2]  # the first image leans to a, the last to b


def test_accent_stays_closer_to_its_photo_than_a_plain_render(model):
    photo, digest, _ = start_photo(load_photo("chelsea"))
    r = render(settings(f"accent({digest},w=1)"), [CH], "cpu", start=photo)
    plain = render(settings("channel"), [CH], "cpu")
    target = np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(r.images[0] - target).mean() < 0.5 * np.abs(plain.images[0] - target).mean()
    assert r.history[-1, 0] > r.history[0, 0]  # the channel grows from where the photo had it
    with pytest.raises(VizError, match="start photo"):
        render(settings(f"accent({digest},w=1)"), [CH], "cpu", start=photo[::-1])


@pytest.mark.parametrize("view", ["diversity(n=2,w=1)", "accent", "mix(17~40,n=2)"])
def test_two_visitors_share_a_view_render_and_cancel_only_their_own_part(view, tmp_path):
    """The hosting rules hold for these views: a second visitor asking the same view of the same channel joins the
    running job, one visitor's cancel leaves it running for the other, and another view of that channel (for
    accent: another start photo) is another job."""
    from viz.serving.jobs import JobManager

    def spec(v: str, photo: str = "chelsea") -> JobSpec:
        start = b""
        if v == "accent":
            _, digest, start = start_photo(load_photo(photo))
            v = f"accent({digest},w=1)"
        return JobSpec(settings(v, size=32, steps=3000), CH, "cpu", start=start)

    m = JobManager(max_running=1, max_queued=8, max_per_session=2, disk_cache=None)
    try:
        job = m.submit_many([spec(view)], session="A")[0]
        assert m.submit_many([spec(view)], session="B")[0] is job
        other = m.submit_many([spec("channel" if view != "accent" else "accent", "coffee")], session="C")[0]
        assert other is not job and other.spec.key != job.spec.key
        deadline = time.monotonic() + 120
        while job.step < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        m.cancel(job, "A")
        step = job.step
        while job.step <= step + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.state == "running" and job.subscribers == {"B"}, (job.state, job.step, step)
        m.cancel(job, "B")
        m.cancel(other, "C")
        wait(job, 60)
        n = 1 if view == "accent" else 2  # a view's images side by side, as far as they got
        assert job.state == "cancelled" and job.image.shape == (32, n * 32 + (n - 1) * 4, 3)
    finally:
        m.shutdown()


def test_a_diversity_job_shows_its_images_side_by_side():
    job = get_manager().submit(settings("diversity(n=2,w=1)", size=32, steps=6), CH)
    wait(job, 120)
    assert job.state == "done" and job.result.image.shape == (32, 2 * 32 + 4, 3)
    assert strip(np.zeros((1, 5, 5, 3), np.uint8)).shape == (5, 5, 3)


def test_cli_count_writes_one_file_per_image(tmp_path):
    out = tmp_path / "div.png"
    p = cli("render", "--layer", "conv3_1", "--channel", "5", "--objective", "diversity", "--count", "2", "--size", "32",
                "--steps", "4", "--out", str(out))
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    assert rec["outs"] == [str(tmp_path / "div-0.png"), str(tmp_path / "div-1.png")]
    assert rec["view"] == "diversity(n=2,w=1)" and len(rec["final_activation"]) == 2
    for name in rec["outs"]:
        with Image.open(name) as im:
            assert im.size == (32, 32)
    p = cli("render", "--layer", "conv3_1", "--channel", "5+0.5*7", "--objective", "mix", "--size", "32", "--steps", "3",
                "--out", str(tmp_path / "mix.png"))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["view"] == "mix(5+0.5*7)"
    p = cli("render", "--layer", "conv3_1", "--channel", "5~7", "--objective", "mix", "--count", "2", "--size", "32",
                "--steps", "3", "--out", str(tmp_path / "lerp.png"))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["channels"] == [5, 7]  # each image's own channel
    p = cli("render", "--layer", "conv3_1", "--channel", "5", "--objective", "accent", "--start", "coffee", "--size", "32",
                "--steps", "3", "--out", str(tmp_path / "acc.png"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "acc.png").is_file()


def test_negative_reads_before_the_relu_whatever_the_method():
    """After the ReLU a channel's negative is flat (anything it ignores scores zero): the seed method, whose
    default is post-ReLU, renders its negative before the ReLU unless told otherwise, which is refused."""
    assert make_settings(LAYER, "seed", view="negative").activation == "pre"
    assert make_settings(LAYER, "seed").activation == "post"
    with pytest.raises(VizError, match="needs pre-ReLU"):
        make_settings(LAYER, "fourier", view="negative", activation="post")


@pytest.mark.parametrize("args,msg", [
    (["--objective", "neuron", "--count", "2"], "--count is for"),
    (["--objective", "accent"], "needs --start"),
    (["--start", "coffee"], "--start is for"),
    (["--objective", "mix", "--channel", "5+"], "cannot read the mix"),
    (["--objective", "neuron", "--x", "abc"], "between 0 and 1"),
    (["--objective", "accent", "--start", "/no/photo.jpg"], "no photo"),
    (["--objective", "neuron", "--weight", "2"], "--weight is for"),
    (["--objective", "diversity", "--count", "٣"], "whole number"),
    (["--objective", "diversity", "--weight", "٣"], "weight must be a number"),
    (["--objective", "mix", "--channel", "0*5"], "between 0.001 and 1000"),
    (["--objective", "negative", "--activation", "post"], "needs pre-ReLU"),
])
def test_cli_bad_combinations_exit_2_with_one_line(tmp_path, args, msg):
    base = ["--layer", "conv3_1", "--size", "32", "--steps", "2", "--out", str(tmp_path / "x.png")]
    if "--channel" not in args:
        base += ["--channel", "5"]
    p = cli("render", *base, *args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------------------ app
def test_generator_renders_each_view(tiny_gallery):
    at = open_page("app_pages/generator.py", layer="conv2_1", channel="3")
    at.number_input(key="gen_size").set_value(32)
    at.number_input(key="gen_steps").set_value(4)
    seen = {}
    for kind, setup in [("diversity", lambda: at.number_input(key="gen_count").set_value(2)),
                        ("mix", lambda: at.text_input(key="gen_mix").set_value("3~9")),
                        ("accent", lambda: at.selectbox(key="gen_pick").set_value("skimage/coffee.png")),
                        ("neuron", lambda: at.slider(key="gen_x").set_value(0.2))]:
        at.segmented_control(key="gen_view").set_value(kind)
        at.run()
        setup()
        at.run()
        _submit(at, "Generate")
        job = get_manager().get(at.session_state["gen_job"])
        assert job is not None and job.settings.view.startswith(kind), (kind, [e.value for e in at.error])
        wait(job, 120)
        at.run()
        assert job.state == "done" and not at.exception
        seen[kind] = job.result.image.shape[1]
        captions = [c for i in at.get("image") for c in i.captions]
        downloads = [d.proto.label for d in at.get("download_button")]
        if kind == "diversity":  # each image captioned, its own download, and all of them in one zip
            assert captions[-2:] == [f"image {i} of 2 (pushed apart from the others)" for i in (1, 2)], captions
            assert downloads.count("PNG") == 2 and "Download all 2 (zip)" in downloads
        if kind == "mix":  # an interpolation says each image's weights
            mixes = [c for c in captions if "·ch" in c]
            assert len(mixes) == 5 and mixes[0] == "1·ch 3 + 0·ch 9" and mixes[-1] == "0·ch 3 + 1·ch 9"
        if kind == "accent":  # named by its photo, shown beside the result
            assert any("accentuates coffee.png" in h.value for h in at.subheader)
            assert "the start photo (coffee.png)" in captions
    assert seen["diversity"] == 2 * 32 + 4 and seen["mix"] == 5 * 32 + 4 * 4 and seen["accent"] == 32
    assert any("neuron(x=0.2" in s.value for s in at.subheader)


def test_compare_any_two_views(tiny_gallery):
    at = open_page("app_pages/compare.py", layer="conv3_1", channel="5")
    at.number_input(key="cmp_size").set_value(32)
    at.number_input(key="cmp_steps").set_value(6)
    at.multiselect(key="cmp_snaps").set_value([])
    at.selectbox(key="cmp_left_method").set_value("fourier")
    at.selectbox(key="cmp_left_view").set_value("negative")
    at.selectbox(key="cmp_right_view").set_value("neuron")
    _submit(at, "Render both")
    jobs = {side: get_manager().get(i) for side, i in at.session_state["cmp_jobs"].items()}
    assert {s: (j.settings.method, j.settings.view) for s, j in jobs.items()} == {
        "left": ("fourier", "negative"), "right": ("fourier", "neuron(x=0.5,y=0.5)")}
    for j in jobs.values():
        wait(j, 120)
    at.run()
    assert jobs["left"].result.final_activation < jobs["right"].result.final_activation
    heads = "\n".join(m.value for m in at.markdown)
    assert "fourier · negative" in heads and "fourier · neuron" in heads


def test_a_gallery_takes_one_image_per_channel(tmp_path):
    from viz.atlas.precompute import precompute

    with pytest.raises(VizError, match="one image per channel"):
        precompute(tmp_path, settings("diversity(n=2,w=1)"), {LAYER: [1]})
    report = precompute(tmp_path, settings("negative", size=32, steps=4), {LAYER: [1]}, retries=0)
    assert report.rendered == 1
    assert any("negative" in p.name for p in (tmp_path / "oxford").iterdir())


# ------------------------------------------------------------------------------------ what an adversary tried
@pytest.mark.parametrize("text", ["mix(3,5)", "mix(3~5,n=2,n=3)", "neuron(q=1)", "neuron(x=0.5,y=0.5,z=1)",
                                  "diversity(n=2,x=0.3)", "accent(deadbeefdeadbeef,w=1,n=3)", "channel(3)",
                                  "negative(x=1)", "channel()", "mix(3~3,n=2)", "mix(3+3)", "mix(0*5)",
                                  "mix(3+0.0000001*5)", "mix(100000*5)", "neuron(x=٠.٥)", "diversity(n=٣)"])
def test_junk_views_are_refused(text):
    with pytest.raises(VizError):
        parse_view(text, "conv1_1")


def test_a_long_mix_is_one_line_not_a_crash():
    with pytest.raises(VizError, match="at most 16"):
        parse_view("mix(" + "+".join(str(i) for i in range(40)) + ")", "conv1_1")
    from viz.engine.objectives import Objective, channel

    many = Objective.sum([channel("conv1_1", i % 64) for i in range(2000)])  # no chain of nested sums
    from viz.engine.probe import Activations

    a = torch.ones(1, 64, 2, 2)
    assert many(Activations({"conv1_1": a}, {"conv1_1": None}, torch.zeros(1, 3, 4, 4))).item() == 2000.0
    with pytest.raises(VizError):
        Objective.sum([])


def test_config_names_tell_every_view_apart():
    views = ["mix(2*104+25)", "mix(2+104+25)", "mix(3*5)", "mix(3+5)", "neuron(x=0,y=0.5)", "neuron(x=-0,y=0.5)",
             "mix(" + "+".join(map(str, range(15))) + ")", "mix(" + "+".join(map(str, range(16))) + ")"]
    names = {config_name(make_settings("conv5_1", "fourier", 32, 4, view=v)) for v in views}
    assert len(names) == len(views) - 1  # x=-0 is x=0: the same view, the same name
    assert all(len(n) <= 80 for n in names)


def test_views_from_the_api_are_validated_like_text():
    from viz.engine.views import View

    with pytest.raises(VizError):
        make_settings("conv5_1", view=View("neuron", x=5.0))
    with pytest.raises(VizError):
        make_settings("conv5_1", view=View("mix"))
    with pytest.raises(VizError, match="out of range"):
        make_settings("conv1_1", view=make_view("mix", "conv5_1", mix="500"))


def test_objective_mistakes_are_one_line(model):
    from viz import Objective, render_vis, wrap_objective
    from viz.engine.objectives import channel

    with pytest.raises(VizError, match="out of range"):
        render_vis(model, channel("conv1_1", 999), steps=1, size=32)
    with pytest.raises(VizError, match="out of range"):
        render_vis(model, channel("conv1_1", -1), steps=1, size=32)
    with pytest.raises(VizError, match="whole numbers"):
        channel("conv1_1", 1.5)

    @wrap_objective
    def sneaky(layer):
        return {layer: frozenset({0})}, lambda acts: acts.channel("conv1_2", 5).mean(dim=(1, 2))

    with pytest.raises(VizError, match="does not declare"):
        render_vis(model, sneaky("conv1_1"), steps=1, size=32)
    scalar = Objective(lambda a: a.channel("conv1_1", 0).mean(), "scalar", {"conv1_1": frozenset({0})})
    with pytest.raises(VizError, match="one value per image"):
        render_vis(model, scalar, steps=1, size=32)
    with pytest.raises(VizError, match="3 weights"):
        render_vis(model, torch.tensor([1.0, 2.0, 3.0]) * channel("conv1_1", 3), steps=1, size=32)
    with pytest.raises(VizError, match="diverged"):
        render_vis(model, float("nan") * channel("conv1_1", 3), steps=2, size=32)


def test_cli_checks_every_output_name_before_rendering_and_a_users_file_wins(tmp_path):
    (tmp_path / "y-1.png").mkdir()
    p = cli("render", "--layer", "conv3_1", "--channel", "5", "--objective", "diversity", "--count", "2", "--size", "32",
                "--steps", "200", "--out", str(tmp_path / "y.png"))
    assert p.returncode == 2 and "is a directory" in p.stderr and not (tmp_path / "y-0.png").exists()
    mine = np.zeros((40, 40, 3), np.uint8)
    mine[:, :20] = 255
    Image.fromarray(mine).save(tmp_path / "astronaut.png")
    import os

    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert np.array_equal(load_photo("astronaut.png"), mine)
    finally:
        os.chdir(here)
    assert load_photo("astronaut").shape[0] > 40  # the bundled one by its name
