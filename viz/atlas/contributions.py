"""The contribution measure's table: at each channel's strongest positions in the bundled photos, the share of its
pre-activation that each input channel supplies (the input's post-ReLU 3x3 window, after the pool where there is
one, times the kernel), averaged over those positions. The photos are read once per weights (committed for
``oxford``, else measured and cached)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..base.corpus import Corpus, bundled, iter_images
from ..base.errors import VizError
from ..base.files import COMMITTED_GALLERY, atomic_write, safe_name
from ..engine.layers import LAYER_NAMES, LAYERS
from ..engine.model import VGGFeatures
from ..engine.weights import cache_dir
from .examples import SCALES, resized
from .wiring import kernels, peak_shares

TOP = 8  # strongest positions per channel averaged by the contribution measure
TABLE_SCHEMA = "vgg16-atlas/contributions"
TABLE_VERSION = 1


@dataclass
class ContributionTable:
    """Per conv layer, per output channel: the mean share each input channel supplies at the channel's ``top``
    strongest positions in the bundled photos (the strongest position of each photo at each scale, the ``top``
    strongest of those), with the number of positions averaged (positions with a non-positive value are left out:
    a share of a negative sum means nothing)."""

    weights_sha256: str
    corpus: str
    top: int
    shares: dict[str, np.ndarray]  # layer -> (out, in) float32
    counts: dict[str, np.ndarray]  # layer -> (out,) int
    where: dict[str, list] = field(default_factory=dict)  # layer -> per channel [[image, scale, row, col, value]]

    def to_bytes(self) -> bytes:
        meta = {"schema": TABLE_SCHEMA, "version": TABLE_VERSION, "weights_sha256": self.weights_sha256,
                "corpus": self.corpus, "top": self.top, "scales": list(SCALES), "where": self.where}
        arrays = {f"{n}.share": a.astype(np.float16) for n, a in self.shares.items()}
        arrays.update({f"{n}.count": a.astype(np.int16) for n, a in self.counts.items()})
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> "ContributionTable":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("schema") != TABLE_SCHEMA or meta.get("version") != TABLE_VERSION:
                    raise ValueError("another schema or version")
                shares = {n: z[f"{n}.share"].astype(np.float32) for n in LAYER_NAMES}
                counts = {n: z[f"{n}.count"].astype(np.int64) for n in LAYER_NAMES}
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise VizError(f"the contribution table {path.name} is unreadable ({type(exc).__name__})") from None
        for n in LAYER_NAMES:
            lay = LAYERS[n]
            if shares[n].shape != (lay.channels, lay.in_channels) or counts[n].shape != (lay.channels,):
                raise VizError(f"the contribution table {path.name} does not fit VGG16 ({n})")
        return cls(meta["weights_sha256"], meta["corpus"], int(meta["top"]), shares, counts, meta.get("where", {}))


def measure_contributions(model: VGGFeatures, corpus: Corpus | None = None, top: int = TOP,
                          progress: Callable[[int, int], None] | None = None) -> ContributionTable:
    """Read the photos of ``corpus`` (default: the bundled ones) at every scale of the dataset examples, one
    image at a time (memory: one image's maps), and build the :class:`ContributionTable`."""
    corpus = corpus or bundled()
    convs = {LAYERS[n].index: n for n in LAYER_NAMES}
    w = {n: kernels(model, n) for n in LAYER_NAMES}
    best = {n: torch.full((LAYERS[n].channels, top), -torch.inf) for n in LAYER_NAMES}
    shares = {n: torch.zeros(LAYERS[n].channels, top, LAYERS[n].in_channels) for n in LAYER_NAMES}
    where = {n: torch.full((LAYERS[n].channels, top, 4), -1, dtype=torch.long) for n in LAYER_NAMES}
    names = list(corpus.images)
    total = len(names) * len(SCALES)
    done = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for index, name, image, _why in iter_images(corpus):
            if image is None:
                continue
            for s, short in enumerate(SCALES):
                x, _ = resized(image, short)
                t = x.to(device)
                inp = x[0].float()  # conv1_1 reads the colour planes (its kernels have the normalization in them)
                t = model.normalize(t)
                for i, module in enumerate(model.features[: LAYERS[LAYER_NAMES[-1]].index + 1]):
                    if i in convs:
                        n = convs[i]
                        if i:
                            inp = t[0].float().cpu().clone()
                        t = module(t)
                        y = t[0].float().cpu()  # read before the in-place ReLU that follows
                        values, pos, sh = peak_shares(inp, y, w[n])
                        merged = torch.cat([best[n], values[:, None]], 1)
                        keep = merged.topk(top, dim=1).indices
                        best[n] = merged.gather(1, keep)
                        cand = torch.cat([shares[n], sh[:, None]], 1)
                        shares[n] = cand.gather(1, keep[:, :, None].expand(-1, -1, cand.shape[2]))
                        loc = torch.cat([torch.full_like(pos[:, :1], index), torch.full_like(pos[:, :1], s), pos], 1)
                        wc = torch.cat([where[n], loc[:, None]], 1)
                        where[n] = wc.gather(1, keep[:, :, None].expand(-1, -1, 4))
                    else:
                        t = module(t)
                done += 1
                if progress:
                    progress(done, total)
    table_shares, counts, places = {}, {}, {}
    for n in LAYER_NAMES:
        ok = (best[n] > 0) & torch.isfinite(best[n])
        counts[n] = ok.sum(1).numpy()
        summed = (shares[n] * ok[:, :, None]).sum(1)
        table_shares[n] = (summed / ok.sum(1, keepdim=True).clamp(min=1)).numpy().astype(np.float32)
        places[n] = [[[names[int(i)], SCALES[int(s)], int(r), int(c), round(float(v), 4)]
                      for (i, s, r, c), v, good in zip(where[n][o].tolist(), best[n][o].tolist(), ok[o].tolist())
                      if good] for o in range(LAYERS[n].channels)]
    return ContributionTable(model.weights.sha256, corpus.name, top, table_shares, counts, places)


def committed_table(weights: str) -> Path:
    return COMMITTED_GALLERY / safe_name(weights) / "circuits" / "contributions.npz"


def cached_table(weights: str) -> Path:
    return cache_dir() / "circuits" / safe_name(weights) / "contributions.npz"


_tables: dict[str, ContributionTable] = {}
_tables_lock = threading.Lock()


def contribution_table(model: VGGFeatures, progress: Callable[[int, int], None] | None = None,
                       notice: Callable[[str], None] | None = None) -> ContributionTable:
    """The table for ``model``'s weights: read from the committed or cached file when its weights hash matches,
    else measured once (22 forward passes, about 20 s on 2 cores) and cached. Once per process and weights."""
    sha = model.weights.sha256
    with _tables_lock:
        if sha in _tables:
            return _tables[sha]
        for path in (committed_table(model.weights_name), cached_table(model.weights_name)):
            if path.is_file():
                try:
                    table = ContributionTable.from_file(path)
                except VizError:
                    continue
                if table.weights_sha256 == sha:
                    _tables[sha] = table
                    return table
        if notice:
            notice(f"reading the bundled photos once for the contribution measure (weights {model.weights_name})")
        table = measure_contributions(model, progress=progress)
        path = cached_table(model.weights_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, table.to_bytes())
        _tables[sha] = table
        return table


def table_ready(model: VGGFeatures) -> bool:
    """Whether :func:`contribution_table` answers without reading the photos."""
    return model.weights.sha256 in _tables or any(p.is_file() for p in (committed_table(model.weights_name),
                                                                       cached_table(model.weights_name)))
