"""How a result is shown: its metrics row and flags, the legend of the numbers, the dataset examples beside it,
and text from files shown literally."""

from __future__ import annotations

import re
from base64 import b64encode
from html import escape
from urllib.parse import urlencode

import streamlit as st

from viz import VizError
from viz.atlas.metrics import naturalness, photo_range, saturation_threshold, versus_photos
from viz.base.images import image_mime

FINAL_HELP = ("The channel's mean activation on the final image exactly as shown. The curve is measured during the "
              "optimization on randomly jittered, scaled and rotated copies (and, in the first steps, on a "
              "smaller image), so its last point is not the same number.")


def _range(measure: str, fmt: str) -> str:
    low, mid, high = photo_range(measure)
    return f"bundled photos: {low:{fmt}} to {high:{fmt}}, median {mid:{fmt}}"


def show_naturalness(summary: dict, image=None) -> None:
    """Clipped share, colourfulness and colour distance, each beside the bundled photos' range (computed from
    ``image`` for a record made before these measures existed)."""
    if "clipped" not in summary and image is not None:
        summary = {**summary, **naturalness(image)}
    if "clipped" not in summary:
        return
    cols = st.columns(3)
    cols[0].metric("Clipped", f"{summary['clipped']:.1%}",
                   help="Share of the 8-bit values at the ends of the range (0-2 or 253-255), where detail is lost; "
                        f"{_range('clipped', '.1%')}. Above {saturation_threshold():.0%} (the most of any photo) "
                        "the image is flagged saturated.")
    cols[1].metric("Colourfulness", f"{summary['colourfulness']:.0f}",
                   help="Hasler and Süsstrunk's colourfulness (spread and mean of the red-green and yellow-blue "
                        f"opponent colours; grey is 0); {_range('colourfulness', '.0f')}.")
    cols[2].metric("Colour distance", f"{summary['colour_distance']:.0f}",
                   help="How far the image's colours are from the bundled photos' colours (sliced Wasserstein "
                        f"distance in 0-255 units; each photo against the others: {_range('colour_distance', '.0f')}).")


def show_metrics(summary: dict, seconds: float | None, curve_last: float | None = None, image=None) -> None:
    """The metrics row of a result and its naturalness row; says why the final activation and the curve's end
    differ when they do."""
    ratio, why = versus_photos(summary)
    final = summary["final_activation"]
    cols = st.columns(4)
    cols[0].metric("Final activation", f"{final:.4g}", help=FINAL_HELP)
    cols[1].metric("× best photo", ratio, help=f"{why} (the channel's strongest response at any position of the "
                                               "bundled photos)")
    cols[2].metric("HF share", f"{summary['hf_fraction']:.2f}",
                   help="High-frequency share of the image's spectrum (natural photos: below 0.22; noise: ~0.8)")
    cols[3].metric("Seconds", "n/a" if seconds is None else f"{seconds:.1f}")
    show_naturalness(summary, image)
    if curve_last is not None and abs(final - curve_last) > 0.05 * max(abs(final), abs(curve_last), 1e-6):
        st.caption(f"The curve ends at {curve_last:.4g}: it is measured on transformed copies during the "
                   f"optimization; the image as shown reaches {final:.4g}.")
    if summary["flags"]:
        # the flags are validated names; the evidence is text from a file: shown as plain text, never Markdown
        st.error(f"Flagged: {', '.join(plain(f) for f in summary['flags'])}", icon=":material/flag:")
        st.text(summary["evidence"])


def show_kernel(container, weights: str, channel: int) -> None:
    """conv1_1 is linear in the pixels: its 3x3 RGB kernel, enlarged, says what it computes."""
    from app_pages._server import load_model_for
    from viz.atlas.kernels import kernel_picture, preferred_colour_and_orientation, rgb_kernel

    try:
        kernel = rgb_kernel(load_model_for(weights), channel)
    except (VizError, OSError, ValueError) as exc:
        container.caption(f"Its kernel cannot be shown: {plain(exc)}")
        return
    container.image(kernel_picture(kernel, 96), width=192, output_format="PNG",
                    caption=f"What it computes: its 3×3 RGB kernel on the pixels (grey 0; a colour brighter where "
                            f"its weight is positive, darker where negative). It {preferred_colour_and_orientation(kernel)}.")


def show_attribution(result) -> None:
    """MACO's attribution (transparency) map beside its image: where the objective's gradient went."""
    if getattr(result, "attribution", None) is None:
        return
    with st.expander("Attribution map (MACO's transparency)", expanded=True):
        left, right = st.columns(2)
        left.image(result.attribution, caption="Where the objective's gradient went, summed over the run "
                                               "(white: the pixels that mattered most)", width="stretch")
        faded = (result.image.astype("float32") * (0.15 + 0.85 * result.attribution.astype("float32") / 255))
        right.image(faded.clip(0, 255).astype("uint8"), caption="The image with the pixels that mattered least "
                                                                "faded", width="stretch")


LEGEND = """
- **N.N×** (× best photo): the image's activation (the channel's mean over the whole image) over the channel's
  strongest response at any single position of the photos that ship with scikit-image and scikit-learn. It is
  one number per image, the same on every page and at any size; above 1× the whole image excites the channel
  more than its best spot in any photo.
- **∞×**: no position of any photo activates the channel (its best is 0 or below) while the image does.
- **n/a**: neither the image nor any photo activates it, or the photo reference is unknown.
- **⚠ flags**: `dead` never positive, neither on photos nor after optimization; `no_rise` the objective did not
  rise; `blank` a nearly uniform image; `noise` mostly high frequencies, finer than any photo (pixel noise, or
  a texture at the pixel scale); `saturated` more of its pixel values clipped to black or white (0-2, 253-255)
  than in any bundled photo. A flagged channel was retried (another seed and twice the steps each time) before
  it was kept flagged.
- **Dotted line** in a curve: the channel's strongest response in the bundled photos, for scale.
- **Final activation** is measured on the final image as shown; the curve on transformed copies during the run.
- **Clipped, Colourfulness, Colour distance** (naturalness): how much of the image is blown out to black or
  white, how vivid its colours are, and how far its colours are from real photos'; each number's help gives the
  bundled photos' own range.
"""


@st.cache_resource(show_spinner=False, max_entries=32)
def layer_examples(weights: str, layer: str):
    from viz.atlas.examples import read_layer, reference_dirs

    for d in reference_dirs(weights):
        try:
            return read_layer(d, layer)
        except VizError:
            continue
    return None


def show_examples(weights: str, layer: str, channel: int) -> None:
    """Dataset examples beside a visualization: the photo regions that excite the channel most, the strongest
    one in its photo, and the regions it responds to most negatively."""
    from viz.atlas.examples import example_tiles, in_context

    ex = layer_examples(weights, layer)
    if ex is None:
        st.caption(f"No dataset examples for {weights} yet: `python -m viz examples --weights {weights} "
                   "--images bundled` makes them.")
        return
    st.markdown(f"#### Real photos that make {layer}:{channel} fire")
    st.caption("Receptive-field crops of the strongest positions in the bundled photos (activation · photo); "
               "at two scales, so some crops cover most of a photo.")
    tiles = example_tiles(ex, channel, "top", 8)
    for col, (tile, caption) in zip(st.columns(8), tiles):
        col.image(tile, caption=caption, width="stretch")
    context = in_context(ex, channel)
    hates = example_tiles(ex, channel, "bottom", 4)
    left, right = st.columns([1, 1.4])
    if context is not None:
        left.image(context[0], caption=context[1], width="stretch")
    with right:
        st.markdown("**What it responds to most negatively**")
        for col, (tile, caption) in zip(st.columns(4), hates):
            col.image(tile, caption=caption, width="stretch")


def legend() -> None:
    with st.expander("How to read these numbers", icon=":material/help:"):
        st.markdown(LEGEND)


def plain(text: object) -> str:
    """``text`` for a Markdown widget, shown literally: a record's text can never become a link, an image or
    formatting (a hostile gallery file could otherwise make the browser fetch a remote image)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])", r"\\\1", str(text))


def linked_picture(container, data: bytes, page: str, params: dict, alt: str, title: str = "") -> None:
    """A stored image (PNG or JPEG) as a real link (``<a href="page?params">``): click, middle-click, ctrl-click
    and "copy link" all work; the picture is the file itself, never re-encoded, filling its column."""
    container.markdown(
        f'<a href="{page}?{urlencode(params)}" target="_self" title="{escape(title)}">'
        f'<img src="data:{image_mime(data)};base64,{b64encode(data).decode()}" alt="{escape(alt)}" width="100%" '
        'style="display:block;width:100%;height:auto;max-width:none;object-fit:contain;border-radius:0.25rem"></a>',
        unsafe_allow_html=True)
