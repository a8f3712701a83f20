"""Naturalness metrics, the saturated flag, the fixed-contrast image and MACO's parameterization."""

import numpy as np
import pytest
import torch

from viz.atlas.metrics import (
    centre_crop,
    clipped_share,
    colour_distance,
    colourfulness,
    naturalness,
    photo_range,
    quality_flags,
    saturation_threshold,
    summarize,
)
from viz.base.corpus import bundled, load_rgb
from viz.engine.param import (
    ColorDecorrelation,
    FFTImage,
    NaturalImage,
    PhaseImage,
    maco_image,
    make_generators,
    standardize,
)
from viz.engine.spectra import natural_spectrum, photo_spectrum

pytestmark = pytest.mark.unit


def _photo(name: str) -> np.ndarray:
    corpus = bundled()
    return centre_crop(load_rgb(corpus.path(next(n for n in corpus.images if name in n))))


def _garish(side: int = 64) -> np.ndarray:
    """Version 3's failure in miniature: blocks of pure primaries, black and white."""
    colours = np.array([[255, 0, 0], [0, 0, 255], [0, 0, 0], [255, 255, 255], [0, 255, 255], [255, 0, 255]])
    idx = (np.arange(side)[:, None] // 16 + np.arange(side)[None, :] // 16) % len(colours)
    return colours[idx].astype(np.uint8)


def test_clipped_share_counts_values_at_the_ends():
    img = np.full((10, 10, 3), 128, np.uint8)
    assert clipped_share(img) == 0
    img[:5] = 255  # half the pixels, every channel
    assert clipped_share(img) == pytest.approx(0.5)
    img[5:, :, 0] = 2  # 0-2 count too: a quarter of the rest's values... one channel of the other half
    assert clipped_share(img) == pytest.approx(0.5 + 0.5 / 3)
    assert clipped_share(np.full((4, 4, 3), 3, np.uint8)) == 0 and clipped_share(np.full((4, 4, 3), 252, np.uint8)) == 0


def test_colourfulness_is_zero_for_grey_and_high_for_primaries():
    grey = np.repeat(np.linspace(0, 255, 64)[None, :, None], 64, 0).repeat(3, 2).astype(np.uint8)
    assert colourfulness(grey) == pytest.approx(0, abs=1e-9)
    assert colourfulness(_garish()) > 150
    photo = _photo("chelsea")
    assert 10 < colourfulness(photo) < colourfulness(_garish())


def test_a_clipped_image_scores_unnatural_and_a_photo_natural():
    garish, photo = _garish(), _photo("coffee")
    g, p = naturalness(garish), naturalness(photo)
    assert g["clipped"] > 0.5 and p["clipped"] < 0.1
    assert g["colourfulness"] > 2 * p["colourfulness"]
    assert g["colour_distance"] > 2 * p["colour_distance"]
    # a photo is close to the photos' pooled colours; a uniform pure blue is far from them
    blue = np.zeros((64, 64, 3), np.uint8)
    blue[..., 2] = 255
    assert colour_distance(blue) > photo_range("colour_distance")[2]


def test_the_saturated_flag_reads_its_threshold_from_the_photos():
    limit = saturation_threshold()
    assert limit == photo_range("clipped")[2]  # the most clipped bundled photo, not a number from our images
    assert 0.05 < limit < 0.5
    history = np.linspace(0, 5, 20)
    flags, evidence = quality_flags(_garish(), history, 5.0, 1.0)
    assert "saturated" in flags and "saturated:" in evidence and "bundled photo" in evidence
    flags, _ = quality_flags(_photo("chelsea"), history, 5.0, 1.0)
    assert "saturated" not in flags
    summary = summarize(_garish(), history, 5.0, 1.0)
    assert {"clipped", "colourfulness", "colour_distance"} <= set(summary)


def test_a_fixed_contrast_image_has_that_contrast_whatever_its_parameters():
    gens = make_generators(0, [1, 2])
    img = NaturalImage(FFTImage(gens, 32), ColorDecorrelation(), "sigmoid", contrast=2.0, per_channel=True)
    with torch.no_grad():
        img.spatial.spectrum.mul_(1000)  # what an optimizer does to a free image's contrast over a long run
        x = img.spatial_values()
    assert torch.allclose(x.std(dim=(2, 3)), torch.full((2, 3), 2.0), atol=1e-3)
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-3)
    assert clipped_share((img()[0].permute(1, 2, 0).detach().numpy() * 255).round()) < 0.05
    s = standardize(torch.randn(2, 3, 8, 8) * 5 + 3)
    assert torch.allclose(s.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-3)


def test_a_fixed_contrast_image_starts_exactly_at_a_photo():
    photo = torch.from_numpy(_photo("chelsea")[:48, :48].copy()).permute(2, 0, 1)[None].float() / 255
    img = NaturalImage(FFTImage(make_generators(0, [0]), 48), ColorDecorrelation(), "sigmoid", contrast=3.0,
                       per_channel=True)
    img.start_from(photo)
    with torch.no_grad():
        # the sigmoid's inverse clamps 0 and 255 to 1e-3 from the ends: a few values move by at most that
        assert (img() - photo).abs().max() < 3e-3


def test_maco_keeps_the_natural_magnitude_and_optimizes_the_phase():
    size = 32
    img = maco_image(make_generators(0, [0, 1]), size)
    spatial = img.spatial
    assert isinstance(spatial, PhaseImage) and [n for n, _ in spatial.named_parameters()] == ["phase"]
    with torch.no_grad():
        spatial.phase.normal_()  # any phase: the image's magnitude spectrum stays the natural one
        out = spatial()
    mag = torch.fft.rfft2(out * 4.0, norm="ortho").abs()  # FFTImage.forward scales by 1/4
    expected = spatial.magnitude[..., 0]
    rel = (mag - expected).abs()[..., 1:, 1:].mean() / expected[..., 1:, 1:].mean()
    assert rel < 0.05, rel
    x = img()
    assert x.shape == (2, 3, size, size) and 0 <= x.min() and x.max() <= 1


def test_both_spectra_fall_with_frequency_like_photos():
    for spec in (natural_spectrum("imagenet"), photo_spectrum(side=64, crops=1)):
        assert spec.shape[0] == 3 and spec.shape[2] == spec.shape[1] // 2 + 1 and (spec >= 0).all()
        low, high = spec[:, 1:4, 1:4].mean(), spec[:, spec.shape[1] // 2 - 2: spec.shape[1] // 2 + 2, -4:].mean()
        assert low > 20 * high  # power falls as 1/f^2 in natural images
    with pytest.raises(ValueError):
        natural_spectrum("nope")


def test_the_first_layer_kernel_is_what_conv1_1_computes(model):
    """conv1_1 is linear in the pixels: the difference of its pre-ReLU responses to two patches is the RGB
    kernel (normalization folded in) dotted with their difference, for any channel."""
    from viz.atlas.kernels import kernel_picture, rgb_kernel
    from viz.engine.layers import get_layer

    cut = model.cut(get_layer("conv1_1"))
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 3, 3, generator=gen), torch.rand(1, 3, 3, 3, generator=gen)
    with torch.no_grad():
        resp = cut(torch.cat([a, b]).contiguous())[:, :, 1, 1]  # the centre tap sees the whole 3x3 patch
    for channel in (0, 17, 63):
        k = torch.from_numpy(rgb_kernel(model, channel)).permute(2, 0, 1)
        expected = float((k * (a - b)[0]).sum())
        assert float(resp[0, channel] - resp[1, channel]) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    pic = kernel_picture(np.zeros((3, 3, 3)), 96)
    assert pic.shape == (96, 96, 3) and (pic == 128).all()
    assert kernel_picture(rgb_kernel(model, 0), 96).std() > 10


def test_no_one_colour_takes_more_than_its_cap_of_the_contrast():
    gens = make_generators(0, [1, 2])
    img = NaturalImage(FFTImage(gens, 32), ColorDecorrelation(), "sigmoid", contrast=3.0, colour_cap=1.25)
    with torch.no_grad():
        img.spatial.spectrum.normal_()
        img.spatial.spectrum[0, 1:].mul_(0.01)  # image 0: nearly all its contrast in the first colour
        x = img.spatial_values()
    sd = x.std(dim=(2, 3))
    assert sd.max() <= 3.0 * 1.25 + 1e-3
    assert sd[0, 0] > 3.0 * 1.2  # the dominant colour keeps up to its cap (sqrt(3) x 3 without it)
    free = NaturalImage(FFTImage(gens, 32), ColorDecorrelation(), "sigmoid", contrast=3.0)
    free.spatial.load_state_dict(img.spatial.state_dict())
    with torch.no_grad():
        assert free.spatial_values()[0, 0].std() > 3.0 * 1.6
        # image 1 spreads its contrast over the colours: the cap leaves it exactly as it was
        assert torch.allclose(free.spatial_values()[1], x[1], atol=1e-4)


def test_the_step_renewal_at_an_octave_shrinks_the_spectrum_and_changes_no_image():
    gens = make_generators(0, [1, 2])
    img = NaturalImage(FFTImage(gens, 32), ColorDecorrelation(), "sigmoid", contrast=3.0, step_rms=0.4)
    spec = img.spatial.spectrum
    assert spec.pow(2).mean().sqrt() < 0.4
    img.set_scale(0.5)
    assert torch.equal(spec, img.spatial.spectrum)  # a fresh start is smaller than 0.4: left alone
    with torch.no_grad():
        spec.normal_()
        spec[1].mul_(0.1)  # image 1 is under 0.4 (about 0.1): left alone
        before, kept = img.full_image(), spec[1].clone()
        img.set_scale(1.0)
        rms = spec.pow(2).mean(dim=(1, 2, 3, 4)).sqrt()
        assert abs(float(rms[0]) - 0.4) < 1e-4 and torch.equal(spec[1], kept)
        assert torch.allclose(img.full_image(), before, atol=1e-3)  # standardized: the same picture
    maco = maco_image(gens, 32)
    maco.step_rms = 0.4
    maco.set_scale(1.0)  # a phase has no scale to renew: nothing happens


def test_a_capped_image_still_starts_exactly_at_a_photo():
    photo = torch.from_numpy(_photo("chelsea")[:48, :48].copy()).permute(2, 0, 1)[None].float() / 255
    img = NaturalImage(FFTImage(make_generators(0, [0]), 48), ColorDecorrelation(), "sigmoid", contrast=3.25,
                       colour_cap=1.0, step_rms=0.4)
    img.start_from(photo)
    img.set_scale(0.25)
    with torch.no_grad():
        assert (img.full_image() - photo).abs().max() < 3e-3
