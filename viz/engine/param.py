"""Image parameterizations: modules whose ``forward()`` returns a batch of RGB images in [0, 1].

Each image of the batch owns a ``torch.Generator`` so its start does not depend on what else is in the batch.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .colour import ColorDecorrelation
from .spectra import DEFAULT_SPECTRUM, natural_spectrum


# Square root of the ImageNet colour correlation matrix (from Lucid), columns normalised to unit max norm.
def _randn(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def _rand(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.rand(shape, generator=g) for g in gens])


class Parameterization(nn.Module):
    """Base class: ``forward() -> (B, 3, H, W)`` in [0, 1]; ``after_step()`` may project the parameters."""

    def after_step(self) -> None:  # pragma: no cover - default does nothing
        pass

    def set_scale(self, scale: float) -> bool:
        """Render at ``scale`` x the full side from now on (coarse-to-fine); False if not supported."""
        return scale == 1.0

    def full_image(self) -> torch.Tensor:
        """The image at full size, whatever scale the optimization is at."""
        return self()


# ------------------------------------------------------------------------------ spatial parameterizations
class Spatial(nn.Module):
    """An unbounded (B, 3, n, n) image: the free parameters of a :class:`NaturalImage`."""

    size: int

    def set_scale(self, scale: float) -> bool:
        return scale == 1.0

    def rescale(self, rms: float) -> None:
        """Shrink each image's parameters to root mean square ``rms`` where they are larger (see
        :class:`NaturalImage`'s ``step_rms``); by default there is nothing to shrink."""

    @contextlib.contextmanager
    def at_full_size(self):
        yield


class PixelImage(Spatial):
    """Raw pixels, started as faint uniform noise around mid-grey (the seed's naive parameterization: every pixel
    is free, so high frequencies dominate the gradient)."""

    def __init__(self, gens: list[torch.Generator], size: int, low: float = 0.4, high: float = 0.6):
        super().__init__()
        self.size = size
        self.pixels = nn.Parameter(low + (high - low) * _rand(gens, (3, size, size)))

    def forward(self) -> torch.Tensor:
        return self.pixels


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude of each coefficient of a real 2-D FFT of an h x w image."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FFTImage(Spatial):
    """Lucid's spatial parameterization: a Fourier spectrum scaled by 1/frequency, so every frequency learns at a
    similar rate.

    ``set_scale(s)`` renders a smaller image of side ``s * size`` from the spectrum's low-frequency block alone
    (the same picture, low-passed and resampled): optimizing at a coarse scale first costs a fraction of the
    pixels and only ever moves the low frequencies, so structure forms before detail.
    """

    def __init__(self, gens: list[torch.Generator], size: int, sd: float = 0.01, decay_power: float = 1.0):
        super().__init__()
        self.size = size
        self.render_size = size
        freqs = rfft2d_freqs(size, size)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power
        self.register_buffer("scale", scale[None, None, :, :, None])
        self.spectrum = nn.Parameter(_randn(gens, (3, *freqs.shape, 2)) * sd)

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> None:
        """Start from ``image`` (B or 1, 3, size, size), unbounded: the exact inverse of ``forward``."""
        spec = torch.view_as_real(torch.fft.rfft2(image.float() * 4.0, norm="ortho"))
        self.spectrum.copy_((spec / self.scale).expand_as(self.spectrum))

    def set_scale(self, scale: float) -> bool:
        n = self.size if scale >= 1 else max(16, 2 * round(self.size * scale / 2))
        self.render_size = min(n, self.size)
        return True

    @torch.no_grad()
    def rescale(self, rms: float) -> None:
        p = self.spectrum
        now = p.pow(2).mean(dim=tuple(range(1, p.dim())), keepdim=True).sqrt()
        p.mul_(torch.where(now > rms, rms / now.clamp_min(1e-12), torch.ones_like(now)))

    @contextlib.contextmanager
    def at_full_size(self):
        n, self.render_size = self.render_size, self.size
        try:
            yield
        finally:
            self.render_size = n

    def full_spectrum(self) -> torch.Tensor:
        """(B, 3, size, size // 2 + 1, 2): the real and imaginary parts of the full-size image's spectrum."""
        return self.scale * self.spectrum

    def _spectrum(self) -> torch.Tensor:
        spec = self.full_spectrum()
        n, full = self.render_size, self.size
        if n == full:
            return spec
        # The small image's frequencies below its Nyquist, taken from the full spectrum; its Nyquist row and
        # column stay zero: irfft2 ignores part of them, and Adam would turn their zero gradients into drift.
        half = n // 2
        top, bottom = spec[:, :, :half, :half], spec[:, :, full - half + 1:, :half]
        nyquist_row = torch.zeros_like(top[:, :, :1])
        block = F.pad(torch.cat([top, nyquist_row, bottom], dim=2), (0, 0, 0, 1))
        return block * (n / full)  # ortho norm: the same pixel amplitudes at the smaller size

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self._spectrum().contiguous())
        n = self.render_size
        return torch.fft.irfft2(spec, s=(n, n), norm="ortho") / 4.0


class PhaseImage(FFTImage):
    """MACO's spatial parameterization (Fel et al. 2023, "Unlocking feature visualization for deeper networks
    with magnitude constrained optimization"): the Fourier magnitude is fixed to a natural-image spectrum and only
    the phase is optimized (standardized before use, as Horama does), so every image keeps the energy per
    frequency of natural images; coarse-to-fine works as for :class:`FFTImage` (the low-frequency block).

    ``magnitude`` is (3, h, w // 2 + 1) in a real FFT's layout (rows in ``fftfreq`` order), of any size: it is
    resampled to this image's spectrum. Its overall scale does not matter (the image is standardized after)."""

    def __init__(self, gens: list[torch.Generator], size: int, magnitude: torch.Tensor):
        super().__init__(gens, size)
        del self.spectrum
        self.register_buffer("magnitude", resize_spectrum(magnitude, size)[None, :, :, :, None])
        self.phase = nn.Parameter(_randn(gens, (3, size, size // 2 + 1)))

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> None:
        """Start from ``image``'s phase (its magnitude stays the natural one): the closest start MACO allows."""
        phase = torch.angle(torch.fft.rfft2(image.float(), norm="ortho"))
        self.phase.copy_(phase.expand_as(self.phase))

    def rescale(self, rms: float) -> None:
        pass  # the phase is an angle: its scale is its meaning

    def full_spectrum(self) -> torch.Tensor:
        p = self.phase
        p = (p - p.mean(dim=(1, 2, 3), keepdim=True)) / (p.std(dim=(1, 2, 3), keepdim=True) + 1e-4)
        return self.magnitude * torch.stack([torch.cos(p), torch.sin(p)], dim=-1)


def resize_spectrum(magnitude: torch.Tensor, size: int) -> torch.Tensor:
    """A (3, h, w // 2 + 1) real-FFT magnitude resampled to a ``size`` x ``size`` image's (3, size, size // 2 + 1):
    rows are centred (``fftshift``) before the bilinear resampling and put back after, so the negative frequencies
    are resampled as the neighbours they are; the scale follows the ortho norm (the same pixel amplitudes)."""
    m = magnitude.float()
    h = m.shape[1]
    centred = torch.fft.fftshift(m, dim=1)[None]
    out = F.interpolate(centred, size=(size, size // 2 + 1), mode="bilinear", align_corners=False,
                        antialias=size < h)[0]
    return torch.fft.ifftshift(out, dim=1).clamp_min(0) * (size / h)


# ----------------------------------------------------------------------------------------------- squash
SQUASHES: dict[str, tuple] = {  # name -> (into [0, 1], its inverse)
    "sigmoid": (torch.sigmoid, lambda y: torch.logit(y.clamp(1e-3, 1 - 1e-3))),
    "none": (lambda x: x, lambda y: y),
}


def standardize(x: torch.Tensor, per_channel: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """Each image of (B, C, H, W) to mean 0 and standard deviation 1 over all its values (Horama's
    ``standardize``, per image), or over each channel's values with ``per_channel``."""
    dims = (2, 3) if per_channel else (1, 2, 3)
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / (x.std(dim=dims, keepdim=True) + eps)


class NaturalImage(Parameterization):
    """``squash(decorrelate(spatial()))``: a spatial parameterization, a colour decorrelation and a squash into
    [0, 1], each a separate piece (as Captum's ``NaturalImage``).

    ``contrast=c`` standardizes each image's spatial values (mean 0, standard deviation ``c``) before the colour
    and the squash, as MACO does: the contrast is then a property of the recipe, not something the optimizer can
    raise without end, so the sigmoid is never driven to its ends (at ``c`` = 1 a value reaches 0 or 255 only
    about 5 standard deviations out). ``clamp=True`` projects the result into [0, 1] after every step instead
    (for an unsquashed pixel image).

    With the colours standardized together (``per_channel=False``), ``colour_cap=k`` keeps any one decorrelated
    colour's standard deviation at most ``k`` times the image's: an image that puts all its contrast into one
    colour would otherwise have sqrt(3) times the contrast there and be pushed to 0 or 255 (conv1_1 and conv1_2).
    ``step_rms=r`` shrinks the spatial parameters to root mean square ``r`` at each octave's start
    (:meth:`set_scale`) where they have grown beyond it. It changes no image, since the image is standardized, but
    Adam's steps have a fixed size, so they become larger again relative to the coefficients: the learning rate
    alone cannot do this (with a standardized image its scale is irrelevant).
    """

    def __init__(self, spatial: Spatial, decorrelate: ColorDecorrelation | None = None, squash: str = "sigmoid",
                 clamp: bool = False, contrast: float | None = None, per_channel: bool = False,
                 colour_cap: float | None = None, step_rms: float | None = None):
        super().__init__()
        self.spatial, self.decorrelate, self.squash_name = spatial, decorrelate, squash
        self.squash, self.unsquash = SQUASHES[squash]
        self.clamp = clamp
        self.contrast, self.per_channel = contrast, per_channel
        self.colour_cap = colour_cap if contrast is not None and not per_channel else None
        self.step_rms = step_rms if contrast is not None else None
        # A start photo's own mean and spread (start_from): standardized values are mapped back onto them, so the
        # first image is the photo exactly; noise starts keep mean 0 and spread ``contrast``.
        self.register_buffer("offset", torch.zeros(1, 1, 1, 1))
        self.register_buffer("gain", torch.ones(1, 1, 1, 1))

    def spatial_values(self) -> torch.Tensor:
        x = self.spatial()
        if self.contrast is not None:
            x = standardize(x, self.per_channel)
            if self.colour_cap is not None:
                x = x * torch.clamp(self.colour_cap / (x.std(dim=(2, 3), keepdim=True) + 1e-6), max=1.0)
            x = x * (self.contrast * self.gain) + self.offset
        return x

    def forward(self) -> torch.Tensor:
        x = self.spatial_values()
        if self.decorrelate is not None:
            x = self.decorrelate(x)
        return self.squash(x)

    def set_scale(self, scale: float) -> bool:
        if self.step_rms is not None:
            self.spatial.rescale(self.step_rms)
        return self.spatial.set_scale(scale)

    def full_image(self) -> torch.Tensor:
        with self.spatial.at_full_size():
            return self()

    @torch.no_grad()
    def after_step(self) -> None:
        if self.clamp:
            for p in self.spatial.parameters():
                p.clamp_(0.0, 1.0)

    @torch.no_grad()
    def start_from(self, image: torch.Tensor) -> None:
        """Start the optimization at ``image`` (1 or B, 3, H, W) in [0, 1] instead of noise (accentuation)."""
        side = self.spatial.size
        x = image.float()
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        x = self.unsquash(x)
        if self.decorrelate is not None:
            x = self.decorrelate.inverse(x)
        if self.contrast is not None:
            dims = (2, 3) if self.per_channel else (1, 2, 3)
            self.colour_cap = None  # the photo keeps its own balance of colours, so the first image is the photo
            self.offset = x.mean(dim=dims, keepdim=True)
            self.gain = x.std(dim=dims, keepdim=True) / self.contrast
        if isinstance(self.spatial, FFTImage):
            self.spatial.set_image(x)
        else:
            next(self.spatial.parameters()).copy_(x.expand_as(next(self.spatial.parameters())))


# The image's standard deviation before the sigmoid, over its three decorrelated colours (recipe version 5). The
# bundled photos, mapped back through the sigmoid and the colour decorrelation, have 1-4 (median about 2.5) per
# colour; at 3.25 the renders' colourfulness stays under Lucent's in every layer and the median clipped share
# under 1 % (docs/BENCHMARKS.md). Version 4 standardized each colour to 3 on its own: standardizing them together
# lets an image put its contrast where the channel wants it (+4 % activation).
CONTRAST = 3.25
COLOUR_CAP = 1.25  # no one colour above 1.25x the image's standard deviation (clipping at conv1_1 0.045 -> 0.005)
STEP_RMS = 0.4  # the spectrum's root mean square at each octave's start: more activation at no cost
MACO_CONTRAST = 3.0  # MACO (version 1) standardizes the colours together at 3, as recipe version 4 did


def fourier_image(gens: list[torch.Generator], size: int, sd: float = 0.01,
                  contrast: float | None = CONTRAST) -> NaturalImage:
    """The modern default: a 1/f-scaled Fourier spectrum, decorrelated colour, the colours standardized together
    to ``contrast`` (None: free, as Lucid and recipe version 3) with no one colour above ``COLOUR_CAP`` of it, the
    spectrum rescaled to ``STEP_RMS`` at each octave's start, sigmoid."""
    return NaturalImage(FFTImage(gens, size, sd=sd), ColorDecorrelation(), "sigmoid", contrast=contrast,
                        colour_cap=COLOUR_CAP, step_rms=STEP_RMS)


def maco_image(gens: list[torch.Generator], size: int, spectrum: str | None = None,
               contrast: float = MACO_CONTRAST) -> NaturalImage:
    """MACO: a natural magnitude spectrum (:mod:`viz.engine.spectra`) with an optimized phase, decorrelated colour,
    standardized to ``contrast``, sigmoid."""
    magnitude = natural_spectrum(spectrum or DEFAULT_SPECTRUM)
    return NaturalImage(PhaseImage(gens, size, magnitude), ColorDecorrelation(), "sigmoid", contrast=contrast)


def pixel_image(gens: list[torch.Generator], size: int) -> NaturalImage:
    """The seed's naive image: free pixels, clamped to [0, 1] after every step."""
    return NaturalImage(PixelImage(gens, size), None, "none", clamp=True)


def make_generators(seed: int, keys: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded from (seed, key) so an image is the same in any batch. A render keys
    image k of a channel's view by ``channel + k * IMAGE_KEY`` (image 0: the channel itself)."""
    gens = []
    for key in keys:
        g = torch.Generator()
        g.manual_seed((seed * 1_000_003 + key * 7919 + 17) % (2**63 - 1))
        gens.append(g)
    return gens




IMAGE_KEY = 1 << 20  # > any channel number: the k-th image of a view draws its own start
