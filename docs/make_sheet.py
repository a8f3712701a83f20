"""The side-by-side sheet in docs/methods-sheet.png: one channel per layer (columns), rendered by the naive seed
method, the default fourier recipe, MACO and Lucent (rows), at 128 px and 128 steps, each image with its
measures under it. Rerun with ``.venv/bin/python docs/make_sheet.py`` (about 5 minutes on 2 CPU cores; the Lucent
row needs torch-lucent from requirements-dev.txt and is left out without it).

The channels are drawn at random (seed 2026) from each layer, so they are not the benchmark's sample.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from viz import LAYERS, make_settings, render  # noqa: E402
from viz.atlas.examples import reference  # noqa: E402
from viz.atlas.metrics import activation_ratio, naturalness  # noqa: E402
from viz.bench.peers import lucent_available, lucent_render  # noqa: E402
from viz.engine.model import load_model  # noqa: E402
from viz.engine.render import channel_activation  # noqa: E402

SIZE, STEPS, SEED = 128, 128, 2026
ROWS = ("seed", "fourier", "maco", "lucent")
LABELS = {"seed": "seed (naive)", "fourier": "fourier v{v}", "maco": "MACO", "lucent": "Lucent 0.1.8"}


def channels() -> dict[str, int]:
    rng = np.random.default_rng(SEED)
    return {name: int(rng.integers(lay.channels)) for name, lay in LAYERS.items()}


def main(out: Path = ROOT / "docs" / "methods-sheet.png") -> None:
    import torch

    from viz.engine.methods import METHODS

    model = load_model("oxford", "cpu", channels_last=True)
    rows = [r for r in ROWS if r != "lucent" or lucent_available()]
    cells: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    for layer, ch in channels().items():
        ref = reference(model, layer)[ch]
        for method in rows:
            print(f"{layer}:{ch} {method}", flush=True)
            if method == "lucent":
                image = lucent_render(model, layer, ch, SIZE, STEPS).image
            else:
                image = render(make_settings(layer, method, size=SIZE, steps=STEPS), [ch], "cpu").images[0]
            x = torch.from_numpy(image[None].copy()).permute(0, 3, 1, 2).float() / 255
            ratio = activation_ratio(channel_activation(model, layer, x, [ch]), np.array([ref]))[0]
            nat = naturalness(image)
            text = (f"x{ratio:.2f} photo" if np.isfinite(ratio) else "x n/a") + \
                f"\nclip {nat['clipped']:.1%}\ncolour {nat['colourfulness']:.0f}"
            cells[(layer, method)] = (image, text)
    label_w, text_h, gap = 110, 40, 6
    cols = list(channels().items())
    sheet = Image.new("RGB", (label_w + len(cols) * (SIZE + gap), 24 + len(rows) * (SIZE + text_h + gap)), "white")
    d = ImageDraw.Draw(sheet)
    for j, (layer, ch) in enumerate(cols):
        d.text((label_w + j * (SIZE + gap), 6), f"{layer}:{ch}", fill=(20, 20, 20))
    for i, method in enumerate(rows):
        y = 24 + i * (SIZE + text_h + gap)
        d.text((4, y + SIZE // 2 - 6), LABELS[method].format(v=METHODS["fourier"].version), fill=(20, 20, 20))
        for j, (layer, _) in enumerate(cols):
            image, text = cells[(layer, method)]
            x = label_w + j * (SIZE + gap)
            sheet.paste(Image.fromarray(image), (x, y))
            d.multiline_text((x, y + SIZE + 1), text, fill=(60, 60, 60), spacing=1)
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main()
