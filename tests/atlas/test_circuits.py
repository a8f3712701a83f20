"""Circuits (viz/atlas/wiring.py, contributions.py, circuits.py): rankings exact on weights with a known structure, expanded weights equal to the
Jacobian of the linear path, the contribution measure equal to a brute-force convolution on the real weights and
photos, the photos read once per weights, and one line for every bad request."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from viz import LAYERS, VizError
from viz.atlas import circuits as C
from viz.atlas import contributions as T
from viz.atlas import wiring as W
from viz.atlas.examples import resized
from viz.base.corpus import bundled, load_rgb
from viz.engine.model import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("oxford")


@pytest.fixture(scope="module")
def planted(model):
    """The real network with conv5_1:104 and conv5_2's reading of it replaced by kernels of a known structure."""
    m = copy.deepcopy(model)
    w = m.features[LAYERS["conv5_1"].index].weight
    w[104] = 0
    w[104, 7] = 2.0  # sum 18, norm 6
    w[104, 3] = 1.0  # sum 9, norm 3
    w[104, 11] = -1.0  # sum -9
    w[104, 20, 1, 1] = -0.5  # sum -0.5
    w2 = m.features[LAYERS["conv5_2"].index].weight
    w2[:, 104] = 0
    w2[40, 104] = 0.25  # sum 2.25
    w2[2, 104, 0, 0] = -3.0  # sum -3
    return m


@pytest.mark.unit
def test_rank_orders_excitatory_then_inhibitory_links():
    excite, inhibit = W.rank(np.array([0.5, -1.0, 2.0, 0.0, -0.2, np.nan, 0.5]), top=5)
    assert excite == [2, 0, 6]  # ties keep their order; zero and NaN are neither
    assert inhibit == [1, 4]
    assert W.rank(np.array([0.5, -1.0, 2.0]), top=1) == ([2], [1])


@pytest.mark.unit
def test_weight_rankings_are_exact_on_planted_kernels(planted):
    c = C.circuit(planted, "conv5_1", 104, "in", "weight", top=3)
    assert (c.other, c.by, c.depth) == ("conv4_3", "weight", 1)
    assert [lk.channel for lk in c.excite] == [7, 3]
    assert [lk.channel for lk in c.inhibit] == [11, 20]
    assert [lk.weight_sum for lk in c.excite] == pytest.approx([18.0, 9.0])
    assert [lk.weight_norm for lk in c.excite] == pytest.approx([6.0, 3.0])
    assert c.inhibit[1].kernel.tolist() == [[0, 0, 0], [0, -0.5, 0], [0, 0, 0]]
    assert "kernel sum" in c.measure
    out = C.circuit(planted, "conv5_1", 104, "out", "weight", top=3)
    assert out.other == "conv5_2"
    assert [lk.channel for lk in out.excite] == [40] and [lk.channel for lk in out.inhibit] == [2]
    assert out.excite[0].weight_sum == pytest.approx(2.25)


@pytest.mark.unit
@pytest.mark.parametrize("pool_between,pool_below", [(False, False), (True, False), (False, True)])
def test_expanded_weights_equal_the_jacobian_of_the_linear_path(pool_between, pool_below):
    torch.manual_seed(0)
    k2, k1 = torch.randn(3, 4, 3, 3), torch.randn(4, 5, 3, 3)
    got = W.expanded(k2, k1, pool_between, pool_below).double()
    # brute force: differentiate conv -> (avg-)pool -> conv at the centre, one output channel at a time
    x = torch.zeros(1, 5, 40, 40, dtype=torch.float64, requires_grad=True)
    t = F.avg_pool2d(x, 2) if pool_below else x
    t = F.conv2d(t, k1.double(), padding=1)
    t = F.avg_pool2d(t, 2) if pool_between else t
    t = F.conv2d(t, k2.double(), padding=1)
    centre = t.shape[-1] // 2
    jac = torch.stack([torch.autograd.grad(t[0, o, centre, centre], x, retain_graph=True)[0][0] for o in range(3)])
    support = jac.abs().sum((0, 1)) > 0
    rows, cols = support.any(1).nonzero()[:, 0], support.any(0).nonzero()[:, 0]
    want = jac[:, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert got.shape == want.shape == (3, 5) + ((8, 8) if pool_between else (10, 10) if pool_below else (5, 5))
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.unit
def test_peak_shares_split_each_peak_among_the_inputs():
    torch.manual_seed(1)
    x, w, b = torch.rand(6, 9, 11), torch.randn(4, 6, 3, 3), torch.randn(4)
    y = F.conv2d(x[None], w, b, padding=1)[0]
    values, where, shares = W.peak_shares(x, y, w)
    for o in range(4):
        r, c = where[o].tolist()
        assert values[o] == y[o].max() == y[o, r, c]
        per_input = F.conv2d(x[None], w[o][:, None], padding=1, groups=6)[0, :, r, c]  # each input alone
        assert torch.allclose(shares[o] * values[o], per_input, atol=1e-5)
        assert float(shares[o].sum() * values[o] + b[o]) == pytest.approx(float(values[o]), rel=1e-4)


@pytest.mark.unit
def test_expanded_circuits_reach_two_layers_away(model):
    c = C.circuit(model, "conv5_1", 104, "in", "weight", depth=2, top=4)
    assert c.other == "conv4_2" and c.excite[0].kernel.shape == (8, 8)  # across conv4's pool
    assert "expanded" in c.measure
    assert C.circuit(model, "conv1_2", 3, "in", "weight", depth=2).other == "input"  # the colour planes
    up = C.circuit(model, "conv4_3", 3, "out", "weight", depth=2, top=2)
    assert up.other == "conv5_2" and up.excite[0].kernel.shape == (10, 10)


@pytest.mark.unit
@pytest.mark.parametrize("args,words", [
    (("conv5_3", 1, "out"), "conv5_3 is the last"),
    (("conv1_1", 1, "in", "weight", 2), "nothing 2 levels below"),
    (("conv5_1", 1, "in", "contribution", 2), "one level at a time"),
    (("conv5_1", 999), "out of range"),
    (("conv5_1", 1, "sideways"), "direction must be"),
    (("conv5_1", 1, "in", "beauty"), "measure must be weight or contribution"),
    (("conv5_1", 1, "in", "weight", 3), "depth must be 1 or 2"),
    (("conv9_9", 1), "unknown layer"),
])
def test_bad_requests_are_one_line(model, args, words):
    with pytest.raises(VizError, match=words) as err:
        C.circuit(model, *args)
    assert "\n" not in str(err.value)
    with pytest.raises(VizError):
        C.circuit(model, "conv5_1", 1, top=0)


@pytest.mark.parametrize("layer,channel", [("conv5_1", 104), ("conv2_1", 10), ("conv1_1", 5)])
def test_contribution_shares_equal_a_brute_force_convolution(model, layer, channel):
    """The table's mean share of each input, recomputed at each of its recorded positions by convolving the
    photo's real input map (the previous layer after its ReLU and pool; the photo for conv1_1) one input channel at
    a time: the table, as committed or measured, is what the network does."""
    table = T.contribution_table(model)
    places = table.where[layer][channel]
    assert len(places) == table.counts[layer][channel] > 0
    lay = LAYERS[layer]
    w = W.kernels(model, layer)[channel]  # (in, 3, 3)
    shares = []
    for image, scale, row, col, value in places:
        x, _ = resized(load_rgb(bundled().path(image)), scale)
        with torch.no_grad():
            if layer == "conv1_1":
                inp = x
            else:
                inp = model.cut(LAYERS[W.layer_below(layer)], relu=True)(x)
                if W.pooled_before(layer):
                    inp = F.max_pool2d(inp, 2)
            y = model.cut(lay)(x)[0, channel]
        assert float(y.max()) == pytest.approx(value, rel=1e-3, abs=1e-3)  # the channel's strongest position
        assert float(y[row, col]) == pytest.approx(value, rel=1e-3, abs=1e-3)
        per_input = F.conv2d(inp, w[:, None], padding=1, groups=lay.in_channels)[0, :, row, col]
        shares.append(per_input / float(y[row, col]))
    want = torch.stack(shares).mean(0).numpy()
    got = table.shares[layer][channel]
    assert np.allclose(got, want, atol=2e-3 + 2e-3 * np.abs(want).max())  # stored as float16
    c = C.circuit(model, layer, channel, "in", "contribution", top=3)
    assert c.excite[0].channel == int(np.argmax(want)) and c.positions == len(places)
    assert c.excite[0].share == pytest.approx(float(want.max()), abs=2e-3)


def test_the_photos_are_read_once_per_weights(model, monkeypatch, tmp_path):
    """Without a committed table the photos are read once, into the cache; afterwards (even in a new process,
    here: the in-process table forgotten) the cached file answers and nothing is measured again."""
    from PIL import Image

    from viz.base.corpus import folder

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(load_rgb(bundled().path("skimage/chelsea.png"))[:120, :120]).save(photos / "cat.png")
    monkeypatch.setattr(T, "committed_table", lambda weights: tmp_path / "none.npz")
    monkeypatch.setattr(T, "bundled", lambda: folder(photos))
    monkeypatch.setattr(T, "_tables", {})
    assert not T.table_ready(model)
    seen = []
    table = T.contribution_table(model, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2, 2)  # one image at two scales
    assert T.cached_table("oxford").is_file() and T.table_ready(model)
    assert "photos" in table.corpus
    for name in table.shares:
        assert table.shares[name].shape == (LAYERS[name].channels, LAYERS[name].in_channels)
        assert (table.counts[name] <= 2).all()
    monkeypatch.setattr(T, "_tables", {})

    def measured_again(*args, **kwargs):
        raise AssertionError("the photos were read a second time")

    monkeypatch.setattr(T, "measure_contributions", measured_again)
    again = T.contribution_table(model)
    assert np.allclose(again.shares["conv3_1"], table.shares["conv3_1"], atol=1e-3)


def test_a_damaged_table_is_measured_again(model, monkeypatch, tmp_path):
    real = T.ContributionTable.from_file(T.committed_table("oxford"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a table")
    with pytest.raises(VizError, match="unreadable"):
        T.ContributionTable.from_file(bad)
    monkeypatch.setattr(T, "committed_table", lambda weights: bad)
    monkeypatch.setattr(T, "_tables", {})
    calls = []
    monkeypatch.setattr(T, "measure_contributions", lambda m, progress=None: calls.append(1) or real)
    assert T.contribution_table(model) is real and calls == [1]
    assert T.ContributionTable.from_file(T.cached_table("oxford")).top == real.top  # and cached for next time


@pytest.mark.unit
def test_neighbourhood_walks_two_levels_down_and_one_up(model):
    nodes, edges = C.neighbourhood(model, "conv5_1", 104, "weight", below=2, above=1, fan=3)
    levels = {n.level for n in nodes}
    assert levels == {-2, -1, 0, 1}
    assert {n.layer for n in nodes if n.level == -2} == {"conv4_2"}
    assert {n.layer for n in nodes if n.level == 1} == {"conv5_2"}
    assert len([n for n in nodes if n.level == -1]) == 3
    assert len(nodes) == len({(n.layer, n.channel) for n in nodes})  # shared inputs appear once
    centre = nodes[0]
    assert (centre.layer, centre.channel, centre.level) == ("conv5_1", 104, 0)
    direct = C.circuit(model, "conv5_1", 104, "in", "weight", top=3)
    strongest = sorted(direct.excite + direct.inhibit, key=lambda lk: -abs(lk.strength))[:3]
    assert {(e.source.channel, round(e.strength, 6)) for e in edges if e.target == centre} == \
        {(lk.channel, round(lk.strength, 6)) for lk in strongest}
    nodes1, _ = C.neighbourhood(model, "conv1_2", 0, "weight", below=2, above=0, fan=2)
    assert {n.layer for n in nodes1 if n.level == -2} == {"input"}
    assert not math.isnan(sum(e.strength for e in edges))
