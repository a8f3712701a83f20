"""Layer downloads: a zip of the images with the manifest, and a labelled contact sheet PNG."""

from __future__ import annotations

import io
import json
import math
import zipfile

from PIL import Image, ImageDraw

from ..atlas.gallery import LayerView


def layer_zip(view: LayerView) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs, JPEGs do not compress further
        records = {}
        for ch in view.channels():
            data = view.image_bytes(ch)
            if data is not None:
                zf.writestr(f"{view.layer}/{view.records[ch]['image']}", data)
                records[str(ch)] = view.records[ch]
        zf.writestr(f"{view.layer}/records.json", json.dumps({"settings": view.settings, "channels": records}))
    return buf.getvalue()


def contact_sheet(view: LayerView, columns: int = 16, tile: int = 96, channels: list[int] | None = None) -> bytes:
    """All intact channel images in a grid, each labelled with its channel number (flagged ones in red)."""
    chans = [c for c in (channels if channels is not None else view.channels()) if c in view.records]
    cols = max(1, min(columns, len(chans)))
    rows = max(1, math.ceil(len(chans) / cols))
    label_h = 14
    sheet = Image.new("RGB", (cols * tile, rows * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, ch in enumerate(chans):
        data = view.image_bytes(ch)
        x, y = (i % cols) * tile, (i // cols) * (tile + label_h)
        if data is not None:
            with Image.open(io.BytesIO(data)) as im:
                sheet.paste(im.convert("RGB").resize((tile, tile)), (x, y))
        colour = (200, 30, 30) if view.records[ch]["flags"] else (40, 40, 40)
        draw.text((x + 3, y + tile + 1), f"{ch}", fill=colour)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()
