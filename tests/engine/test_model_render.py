import threading

import numpy as np
import pytest
import torch
import torchvision

from viz import VizError, get_layer, make_settings, render
from viz.engine.model import build_features
from viz.engine.weights import CAFFE_NORM


def test_cut_model_matches_torchvision_and_stops_at_the_layer(model, oxford_state_dict):
    tv = torchvision.models.vgg16(weights=None).features
    assert [repr(m) for m in build_features()] == [repr(m) for m in tv]  # ours, built without torchvision
    tv.load_state_dict({k.removeprefix("features."): v for k, v in oxford_state_dict.items()})
    tv.eval()
    x = torch.rand(2, 3, 48, 48)
    caffe = x[:, [2, 1, 0]] * 255 - torch.tensor(CAFFE_NORM.mean).view(1, 3, 1, 1)
    layer = get_layer("conv3_1")
    cut = model.cut(layer)
    with torch.no_grad():
        ours = cut(x)
        ref = tv[: layer.index + 1](caffe)
        post = model.cut(layer, relu=True)(x)
    assert ours.shape == (2, 256, 12, 12)
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=2e-2)  # activations are in the hundreds
    assert (ours < 0).any() and (post >= 0).all()
    assert len(cut.body) == layer.index + 1  # nothing above the target conv runs
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_shared_model_in_threads_gives_identical_results(model):
    cut = model.cut(get_layer("conv2_1"))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = cut(x)
    outs = [None] * 4

    def work(i):
        with torch.no_grad():
            outs[i] = cut(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outs:
        torch.testing.assert_close(o, ref)


@pytest.mark.parametrize("method,layer,channel", [("fourier", "conv4_1", 7), ("seed", "conv3_1", 5)])
def test_each_method_raises_its_objective(method, layer, channel):
    r = render(make_settings(layer, method, size=32, steps=24), [channel], "cpu")
    assert r.history.shape == (24, 1)
    assert r.history[-5:].mean() > r.history[:3].mean() + 1.0
    assert r.images.shape == (1, 32, 32, 3) and r.images.dtype == np.uint8


def test_same_seed_same_image_other_seed_other_image_any_batch():
    s = make_settings("conv3_1", "fourier", size=32, steps=8, seed=3)
    a = render(s, [1, 2], "cpu")
    b = render(s, [1, 2], "cpu")
    assert np.array_equal(a.images, b.images)
    alone = render(s, [2], "cpu")  # channel 2's image does not depend on its batch mates
    assert np.abs(alone.images[0].astype(int) - a.images[1].astype(int)).max() <= 2
    other = render(make_settings("conv3_1", "fourier", size=32, steps=8, seed=4), [1, 2], "cpu")
    assert np.abs(other.images.astype(int) - a.images.astype(int)).mean() > 5


def test_batch_optimizes_each_image_for_its_own_channel(model):
    s = make_settings("conv4_1", "fourier", size=32, steps=32)
    r = render(s, [10, 20], "cpu")
    imgs = torch.from_numpy(r.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        acts = model.cut(get_layer("conv4_1"))(imgs).mean(dim=(2, 3))
    assert acts[0, 10] > acts[1, 10] and acts[1, 20] > acts[0, 20]


def test_callback_and_clean_cancel():
    stop = threading.Event()
    seen = []

    def cb(info):
        seen.append((info.step, info.images().shape))
        if info.step == 3:
            stop.set()

    r = render(make_settings("conv2_1", "fourier", size=32, steps=50), [0], "cpu", callback=cb, cancel=stop)
    assert r.cancelled and r.steps_done == 3 and r.history.shape == (3, 1)
    assert seen == [(1, (1, 32, 32, 3)), (2, (1, 32, 32, 3)), (3, (1, 32, 32, 3))]
    assert r.images.shape == (1, 32, 32, 3)  # the work done so far is kept


def test_bad_settings_are_refused():
    for kwargs, msg in [
        (dict(layer="conv5_1", method="deepdream"), "unknown method"),
        (dict(layer="conv5_1", size=100000), "size"),
        (dict(layer="conv5_1", size=4), "size"),
        (dict(layer="conv5_1", steps=0), "steps"),
        (dict(layer="conv5_1", steps="ten"), "steps"),
        (dict(layer="conv5_1", lr=-0.1), "learning rate"),
        (dict(layer="conv5_1", lr="nan"), "learning rate"),
        (dict(layer="conv5_1", precision="fp8"), "precision"),
        (dict(layer="conv5_1", seed=2147483648), "seed must be between 0 and 2147483647, got 2147483648"),
        (dict(layer="conv5_1", seed=-1), "seed must be between 0 and 2147483647"),
        (dict(layer="conv5_1", seed="abc"), "seed must be a whole number"),
    ]:
        with pytest.raises(VizError, match=msg):
            make_settings(**kwargs)


def test_default_method_fixes_the_seed_failure_on_conv5_1_channel_104(model):
    """The seed's blank square and its fix: at the same small budget, the seed method leaves conv5_1:104
    untouched noise (its post-ReLU map is zero, so is its gradient) while the default drives the channel's mean
    above its strongest single position in any bundled photo."""
    from viz.atlas.examples import reference

    size, steps = 64, 48
    natural = reference(model, "conv5_1")[104]
    assert natural > 0
    fourier = render(make_settings("conv5_1", "fourier", size=size, steps=steps), [104], "cpu")
    seed = render(make_settings("conv5_1", "seed", size=size, steps=steps), [104], "cpu")
    f_std, s_std = fourier.images.std() / 255, seed.images.std() / 255
    assert f_std > 0.12, f_std  # a real pattern
    assert fourier.final_activation[0] > natural, (fourier.final_activation[0], natural)
    assert s_std < 0.07, s_std  # the starting noise (std 0.058) is all there is
    assert seed.final_activation[0] < 0
    assert seed.history.max() == 0.0  # post-ReLU: never positive, so no gradient


def test_coarse_scale_renders_the_low_passed_image_and_moves_only_low_frequencies():
    from viz.engine.param import fourier_image, make_generators

    p = fourier_image(make_generators(0, [1, 2]), 64, sd=0.5)
    full = p().detach()
    assert p.set_scale(0.5) and p.spatial.render_size == 32
    small = p()
    assert small.shape == (2, 3, 32, 32)
    reference = torch.nn.functional.interpolate(full, size=32, mode="area")
    err = (small.detach() - reference).abs().mean(dim=(1, 2, 3))
    other = (small.detach() - reference.flip(0)).abs().mean(dim=(1, 2, 3))  # against the other image
    assert (err < 0.5 * other).all()  # the same picture, smaller
    small.mean().backward()
    grad = p.spatial.spectrum.grad.abs().sum(dim=(0, 1, 4))  # (64, 33): which coefficients the small image touches
    touched = grad > 0
    assert touched[:16, :16].any() and touched[-15:, :16].any()
    assert not touched[16:49].any() and not touched[:, 16:].any()  # nothing above the small image's Nyquist
    assert p.full_image().shape == (2, 3, 64, 64) and p.spatial.render_size == 32  # a preview leaves the scale alone


def test_octaves_render_coarse_to_fine_and_return_full_size(model):
    from viz.engine.objectives import channel
    from viz.engine.optimize import adam, optimize
    from viz.engine.param import fourier_image, make_generators
    from viz.engine.probe import Probe
    from viz.engine.transforms import BatchRNG

    gens = make_generators(0, [3])
    param = fourier_image(gens, 48)
    seen = []
    objective = channel("conv2_1", 3)
    probe = Probe(model, objective.reads)
    spy = lambda m, inp, out: seen.append(inp[0].shape[-1])  # noqa: E731
    handle = probe.body[0].register_forward_hook(spy)  # a hook on this test's own model only
    try:
        out = optimize(probe, param, objective, None, BatchRNG(gens), 10, adam(0.05),
                       octaves=((0.0, 1 / 3), (0.3, 0.5), (0.6, 0.75), (0.9, 1.0)))
    finally:
        handle.remove()
    assert seen == [16] * 3 + [24] * 3 + [36] * 3 + [48]
    assert out.images.shape == (1, 3, 48, 48) and out.history.shape == (10, 1)


def test_cut_can_compute_only_the_batch_channels(model):
    x = torch.rand(2, 3, 40, 40)
    full = model.cut(get_layer("conv4_1"))(x)
    picked = model.cut(get_layer("conv4_1"), channels=[300, 7, 300])(x)
    assert picked.shape == (2, 3, 5, 5)
    torch.testing.assert_close(picked, full[:, [300, 7, 300]], rtol=1e-4, atol=1e-4)
