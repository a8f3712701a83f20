"""Objectives, the probe, parameterizations and transforms, piece by piece on tiny tensors (and the real weights
where a network is needed)."""

import math

import pytest
import torch

from viz.base.errors import VizError
from viz.engine.objectives import Objective, channel, diversity, merge_reads, neuron, seed_mse, stay_close
from viz.engine.optimize import adam, optimize
from viz.engine.param import (
    ColorDecorrelation,
    FFTImage,
    NaturalImage,
    PixelImage,
    fourier_image,
    make_generators,
    pixel_image,
)
from viz.engine.probe import Activations, Probe
from viz.engine.transforms import (
    BatchRNG,
    Compose,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    resample,
    standard_transforms,
)

pytestmark = pytest.mark.unit


def acts_of(a: torch.Tensor, layer: str = "conv1_1", image: torch.Tensor | None = None) -> Activations:
    return Activations({layer: a}, {layer: None}, image if image is not None else torch.zeros(a.shape[0], 3, 4, 4))


# ------------------------------------------------------------------------------------------------ algebra
def test_objectives_add_subtract_and_scale():
    a = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    acts = acts_of(a)
    c0, c2 = channel("conv1_1", 0), channel("conv1_1", 2)
    torch.testing.assert_close(c0(acts), a[:, 0].mean(dim=(1, 2)))
    torch.testing.assert_close((c0 + 0.5 * c2)(acts), a[:, 0].mean(dim=(1, 2)) + 0.5 * a[:, 2].mean(dim=(1, 2)))
    torch.testing.assert_close((c0 - c2)(acts), a[:, 0].mean(dim=(1, 2)) - a[:, 2].mean(dim=(1, 2)))
    torch.testing.assert_close((-c0)(acts), -c0(acts))
    torch.testing.assert_close((c0 / 4 + 1)(acts), c0(acts) / 4 + 1)
    torch.testing.assert_close(Objective.sum([c0, c2, c0])(acts), 2 * c0(acts) + c2(acts))
    torch.testing.assert_close(sum([c0, c2])(acts), c0(acts) + c2(acts))
    w = torch.tensor([1.0, 0.0])
    torch.testing.assert_close((w * c0 + (1 - w) * c2)(acts), torch.stack([c0(acts)[0], c2(acts)[1]]))
    assert (c0 + 0.5 * c2).description == "channel(conv1_1, 0) + 0.5 * channel(conv1_1, 2)"
    assert (c0 + 0.5 * c2).reads == {"conv1_1": frozenset({0, 2})}
    with pytest.raises(TypeError):
        c0 * "x"  # noqa: B018


def test_reads_merge_and_a_whole_layer_wins():
    assert merge_reads({"a": frozenset({1})}, {"a": frozenset({2}), "b": None}) == {"a": frozenset({1, 2}), "b": None}
    assert merge_reads({"a": None}, {"a": frozenset({2})}) == {"a": None}
    assert (channel("conv5_1", 3) + diversity("conv4_1")).layers == ["conv5_1", "conv4_1"]


def test_each_image_can_read_its_own_channel():
    a = torch.randn(3, 5, 2, 2)
    got = channel("conv1_1", [4, 0, 4])(acts_of(a))
    torch.testing.assert_close(got, torch.stack([a[0, 4], a[1, 0], a[2, 4]]).mean(dim=(1, 2)))
    with pytest.raises(VizError, match="3 images"):
        channel("conv1_1", [1, 2])(acts_of(a))


def test_neuron_reads_one_position():
    a = torch.randn(1, 2, 5, 4)
    acts = acts_of(a)
    assert neuron("conv1_1", 1)(acts).item() == a[0, 1, 2, 2].item()  # the centre by default
    assert neuron("conv1_1", 1, x=0.0, y=1.0)(acts).item() == a[0, 1, 4, 0].item()


def test_diversity_is_highest_for_unlike_images():
    same = torch.ones(2, 3, 4, 4)
    unlike = torch.zeros(2, 3, 4, 4)
    unlike[0, 0], unlike[1, 1] = 1.0, 1.0  # different channels active: orthogonal Gram matrices
    d = diversity("conv1_1")
    assert torch.allclose(d(acts_of(same)), torch.tensor([-1.0, -1.0]))
    assert torch.allclose(d(acts_of(unlike)), torch.tensor([0.0, 0.0]))


def test_stay_close_is_zero_at_the_target_at_any_scale():
    target = torch.rand(1, 3, 16, 16)
    obj = stay_close(target)
    assert obj.reads == {}
    assert obj(acts_of(torch.zeros(1, 1, 1, 1), image=target)).item() == 0.0
    small = torch.nn.functional.interpolate(target, size=8, mode="bilinear", antialias=True, align_corners=False)
    assert abs(obj(acts_of(torch.zeros(1, 1, 1, 1), image=small)).item()) < 1e-10
    assert obj(acts_of(torch.zeros(1, 1, 1, 1), image=1 - target)).item() < -0.01


def test_seed_mse_reports_the_channel_mean():
    a = torch.rand(2, 3, 4, 4)
    obj = seed_mse("conv1_1", [0, 1])
    acts = acts_of(a)
    assert (obj(acts) < 0).all()
    torch.testing.assert_close(obj.report(acts), torch.stack([a[0, 0], a[1, 1]]).mean(dim=(1, 2)))


# ------------------------------------------------------------------------------------- gradient descent works
def assert_gradient_descent(model, objective: Objective, steps: int = 12, size: int = 32, param=None):
    """Lucent's check: a few optimizer steps on a tiny image raise the objective (what it reports: the seed's
    MSE chases a target that moves with the channel, so it reports the channel mean)."""
    gens = make_generators(0, [0])
    param = param or fourier_image(gens, size)
    probe = Probe(model, objective.reads or {"conv1_1": frozenset({0})})
    with torch.no_grad():
        before = objective.report(_acts(probe, param)).item()
    optimize(probe, param, objective, None, BatchRNG(gens), steps, adam(0.05))
    with torch.no_grad():
        after = objective.report(_acts(probe, param)).item()
    assert after > before, (objective.description, before, after)


def _acts(probe, param):
    image = param()
    acts = probe(image)
    acts.image = image
    return acts


@pytest.mark.parametrize("make", [
    lambda: channel("conv2_1", 5),
    lambda: neuron("conv3_1", 7, x=0.25, y=0.75),
    lambda: -channel("conv2_1", 5),
    lambda: channel("conv2_2", 1) + 0.5 * channel("conv2_2", 9),
    lambda: channel("conv3_1", 2) + diversity("conv1_2"),
    lambda: stay_close(torch.rand(1, 3, 32, 32)),
    lambda: seed_mse("conv2_1", 3),
], ids=["channel", "neuron", "negative", "mix", "channel+diversity", "stay_close", "seed_mse"])
def test_every_objective_can_be_maximised(model, make):
    assert_gradient_descent(model, make())


# --------------------------------------------------------------------------------------------------- probe
def test_probe_gives_each_layer_the_cut_networks_map(model):
    x = torch.rand(2, 3, 40, 40)
    probe = Probe(model, {"conv1_2": None, "conv3_1": frozenset({7, 300 % 256})})
    acts = probe(x)
    torch.testing.assert_close(acts.layer("conv1_2"), model.cut(model_layer("conv1_2"))(x), rtol=1e-4, atol=1e-4)
    full = model.cut(model_layer("conv3_1"))(x)
    assert acts.maps["conv3_1"].shape[1] == 2  # only the channels read are computed
    torch.testing.assert_close(acts.channel("conv3_1", 44), full[:, 44], rtol=1e-4, atol=1e-4)
    with pytest.raises(VizError, match="some channels"):
        acts.layer("conv3_1")
    post = Probe(model, {"conv1_2": None}, relu=True)(x).layer("conv1_2")
    assert (post >= 0).all() and torch.allclose(post, acts.layer("conv1_2").clamp(min=0), atol=1e-5)


def model_layer(name):
    from viz.engine.layers import get_layer

    return get_layer(name)


# ---------------------------------------------------------------------------------------- parameterizations
def test_natural_image_is_spatial_then_colour_then_squash():
    gens = make_generators(3, [1])
    spatial = FFTImage(gens, 16)
    img = NaturalImage(spatial, ColorDecorrelation(), "sigmoid")
    raw = spatial()
    expected = torch.sigmoid(torch.einsum("bchw,dc->bdhw", raw, img.decorrelate.matrix))
    torch.testing.assert_close(img(), expected)
    assert img().shape == (1, 3, 16, 16) and 0 < img().min() and img().max() < 1


@pytest.mark.parametrize("make", [fourier_image, pixel_image])
def test_start_from_a_photo_reproduces_it(make):
    photo = torch.rand(1, 3, 24, 24) * 0.9 + 0.05
    p = make(make_generators(0, [0, 1]), 24)
    p.start_from(photo)
    out = p().detach()
    assert out.shape == (2, 3, 24, 24)
    assert (out - photo).abs().max() < 1e-3


def test_pixel_image_is_clamped_after_each_step():
    p = pixel_image(make_generators(0, [0]), 8)
    with torch.no_grad():
        p.spatial.pixels.add_(5.0)
    p.after_step()
    assert p().max() == 1.0 and isinstance(p.spatial, PixelImage)


# ---------------------------------------------------------------------------------------------- transforms
def rng(n: int = 2, seed: int = 0) -> BatchRNG:
    return BatchRNG(make_generators(seed, list(range(n))))


def test_identity_transforms_leave_the_image_alone():
    x = torch.rand(2, 3, 16, 16)
    for t in (Jitter(0.0), RandomScale([1.0]), RandomRotate([0])):
        torch.testing.assert_close(t(x, rng()), x, rtol=1e-5, atol=1e-5)


def test_jitter_shifts_by_whole_pixels_when_asked():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    m = torch.eye(3)[None].clone()
    m[0, 0, 2] = 2 * 2 / 8  # two pixels in normalised coordinates
    y = resample(x, m, fill=0.0)
    assert y[0, 0, 4, 2].item() == pytest.approx(1.0, abs=1e-5)
    offsets = Jitter(0.25).matrices(rng(4))[:, :2, 2]
    assert (offsets.abs() <= 0.5 + 1e-6).all() and offsets.std() > 0


def test_scale_and_rotation_draw_from_their_choices():
    s = RandomScale([0.5, 2.0]).matrices(rng(16))[:, 0, 0]
    assert set(s.tolist()) <= {2.0, 0.5} and len(set(s.tolist())) == 2
    r = RandomRotate([90]).matrices(rng(1))
    assert torch.allclose(r[0, :2, :2], torch.tensor([[0.0, -1.0], [1.0, 0.0]]), atol=1e-6)


def test_pad_grows_the_canvas_with_grey():
    y = Pad(0.25)(torch.zeros(1, 3, 8, 8), rng(1))
    assert y.shape == (1, 3, 12, 12) and y[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5]


def test_compose_fuses_affine_runs_into_one_resampling(monkeypatch):
    import viz.engine.transforms as T

    calls = []
    real = T.resample
    monkeypatch.setattr(T, "resample", lambda x, m, fill=0.5: calls.append(1) or real(x, m, fill))
    x = torch.rand(2, 3, 16, 16)
    y = standard_transforms()(x, rng())
    assert len(calls) == 1 and y.shape == x.shape
    calls.clear()
    Compose([Jitter(0.1), Pad(0.1), RandomScale([1.1])])(x, rng())
    assert len(calls) == 2  # the pad splits the affine run


def test_each_image_draws_its_own_transform():
    x = torch.rand(1, 3, 16, 16).expand(2, -1, -1, -1)
    a = standard_transforms()(x, rng(2, seed=1))
    b = standard_transforms()(x[:1], BatchRNG(make_generators(1, [0])))
    torch.testing.assert_close(a[:1], b)  # image 0 does not depend on the rest of the batch
    assert not torch.allclose(a[0], a[1])
    assert math.isfinite(a.sum().item())


def test_the_readmes_custom_objective_runs(model):
    """The README's example, executed as written, then rendered with render_vis."""
    import re
    from pathlib import Path

    from viz import render_vis

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## Engine API.*?```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 16
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    objective = scope["objective"]
    assert objective.description == "centre_surround(conv5_1, 104) + 0.2 * channel(conv5_1, 25)"
    assert objective.reads == {"conv5_1": frozenset({25, 104})}
    out = render_vis(model, objective, steps=10, size=48)
    assert out.images.shape == (1, 3, 48, 48) and out.history[-1, 0] > out.history[0, 0]
