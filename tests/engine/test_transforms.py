"""The random transforms: the blur of recipe version 5 (the geometric ones are tested through renders)."""

import pytest
import torch

from viz.engine.param import make_generators
from viz.engine.transforms import BLUR, BatchRNG, RandomBlur, blurred_transforms, standard_transforms

pytestmark = pytest.mark.unit


def _stripes(b: int = 3, side: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    board = ((yy + xx) // 3 % 2).float()  # diagonal stripes 3 px wide
    return torch.stack([board, 1 - board, 0.5 + 0 * board])[None].repeat(b, 1, 1, 1)


def test_the_blur_smooths_each_image_by_its_own_draw_and_keeps_its_mean():
    x = _stripes()
    out = RandomBlur(2.0 / 32)(x, BatchRNG(make_generators(0, [1, 2, 3])))
    assert out.shape == x.shape
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-4)  # reflected borders: no grey
    spread = out[:, :2].std(dim=(1, 2, 3))
    smoothed = spread < x[:, :2].std(dim=(1, 2, 3)) - 0.01
    assert int(smoothed.sum()) >= 2 and (spread <= x[:, :2].std(dim=(1, 2, 3)) + 1e-5).all()
    assert spread.max() - spread.min() > 0.01  # by different amounts: each image has its own sigma
    # an image's blur does not depend on the rest of the batch
    alone = RandomBlur(2.0 / 32)(x[1:2], BatchRNG(make_generators(0, [2])))
    assert torch.allclose(alone, out[1:2], atol=1e-5)


def test_a_blur_under_a_tenth_of_a_pixel_leaves_the_image_alone():
    x = _stripes(2)
    assert torch.equal(RandomBlur(0.05 / 32)(x, BatchRNG(make_generators(0, [1, 2]))), x)
    # at the 1/4 octave of a 128-px render the default blur is at most 0.15 px: mostly nothing, never much
    small = RandomBlur(BLUR)(_stripes(4, 32), BatchRNG(make_generators(0, [1, 2, 3, 4])))
    assert (small - _stripes(4, 32)).abs().max() < 0.2


def test_the_default_stack_is_the_standard_one_then_the_blur():
    stack = blurred_transforms()
    assert [type(t) for t in stack.transforms[:-1]] == [type(t) for t in standard_transforms().transforms]
    assert isinstance(stack.transforms[-1], RandomBlur) and stack.transforms[-1].frac == BLUR
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    stack(x, BatchRNG(make_generators(0, [1, 2]))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()  # the blur passes gradients back to the image
