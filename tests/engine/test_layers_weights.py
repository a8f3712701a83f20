import json

import pytest
import torch
import torchvision

from viz import LAYERS, VizError, get_layer, parse_channel, parse_channels
from viz.engine import weights as W
from viz.engine.model import build_features

pytestmark = pytest.mark.unit


def test_torchvision_imports_and_its_ops_work():
    # The local torch-2.13.0+cpu wheel makes this fail with "operator torchvision::nms does not exist".
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_layer_table_matches_torchvision_vgg16():
    tv = torchvision.models.vgg16(weights=None).features
    expected_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert [layer.index for layer in LAYERS.values()] == expected_idx
    for layer in LAYERS.values():
        conv = tv[layer.index]
        assert isinstance(conv, torch.nn.Conv2d)
        assert (conv.out_channels, conv.in_channels) == (layer.channels, layer.in_channels)
    ours = {k: v.shape for k, v in build_features().state_dict().items()}
    assert ours == {k: v.shape for k, v in tv.state_dict().items()}
    assert sum(layer.channels for layer in LAYERS.values()) == 4224


def test_receptive_fields():
    rf = {name: layer.receptive_field for name, layer in LAYERS.items()}
    assert rf["conv1_1"] == 3 and rf["conv1_2"] == 5 and rf["conv2_1"] == 10
    assert rf["conv3_1"] == 24 and rf["conv4_1"] == 60 and rf["conv5_1"] == 132 and rf["conv5_3"] == 196


@pytest.mark.parametrize("bad", ["conv6_1", "../../etc", "", None, 3, "CONV1_1", "conv1_1/../x"])
def test_unknown_layers_are_refused(bad):
    with pytest.raises(VizError, match="unknown layer"):
        get_layer(bad)


@pytest.mark.parametrize("bad", ["-1", "64", "abc", "1.5", "", True, 2.0, "9" * 30])
def test_bad_channels_are_refused(bad):
    with pytest.raises(VizError):
        parse_channel(get_layer("conv1_1"), bad)


def test_channel_specs():
    conv1 = get_layer("conv1_1")
    assert parse_channels(conv1, "all") == list(range(64))
    assert parse_channels(conv1, "0-3,10, 2") == [0, 1, 2, 3, 10]
    with pytest.raises(VizError):
        parse_channels(conv1, "5-2")


def test_oxford_conversion_gives_the_published_values(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ_CACHE_DIR", str(tmp_path))
    notes = []
    w = W.load_oxford(notice=notes.append)
    assert notes and "converting" in notes[0]
    # Bit-identical to the published float32 values.
    published_first = torch.tensor([0.73429835, 0.093403675, 0.06775674, 0.8862966], dtype=torch.float32)
    published_last = torch.tensor([0.18837857, -0.50036746], dtype=torch.float32)
    assert torch.equal(w.state_dict["features.0.bias"][:4], published_first)
    assert torch.equal(w.state_dict["features.28.bias"][:2], published_last)
    assert w.normalization == W.CAFFE_NORM
    # The converted file is reused when its hash matches ...
    notes.clear()
    again = W.load_oxford(notice=notes.append)
    assert not notes and torch.equal(again.state_dict["features.0.weight"], w.state_dict["features.0.weight"])
    # ... and converted again when it was tampered with.
    target = tmp_path / "oxford_vgg16_features.pt"
    sd = torch.load(target, weights_only=True)
    sd["features.0.bias"][0] = 123.0
    torch.save(sd, target)
    fixed = W.load_oxford(notice=notes.append)
    assert notes and fixed.state_dict["features.0.bias"][0].item() == pytest.approx(0.73429835)
    assert json.loads((tmp_path / "oxford_vgg16_features.json").read_text())["sha256"] == W.sha256_file(target)


def test_local_file_source(tmp_path, oxford_state_dict):
    good = tmp_path / "mine.pt"
    full = dict(oxford_state_dict)
    full["classifier.0.weight"] = torch.zeros(2, 2)  # a full checkpoint's extra keys are fine
    torch.save(full, good)
    w = W.load_weights(str(good))
    assert w.name.startswith("file:mine:") and torch.equal(w.state_dict["features.28.bias"],
                                                          oxford_state_dict["features.28.bias"])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(VizError, match="not a loadable"):
        W.load_weights(str(garbage))
    wrong = tmp_path / "wrong.pt"
    bad = dict(oxford_state_dict)
    bad["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad, wrong)
    with pytest.raises(VizError, match="shape"):
        W.load_weights(str(wrong))
    with pytest.raises(VizError, match="not found"):
        W.load_weights(str(tmp_path / "missing.pt"))


def test_weights_names_are_validated():
    with pytest.raises(VizError, match="unknown weights"):
        W.resolve_weights_name("imagenet21k")
    assert W.resolve_weights_name("auto") in ("oxford", "torchvision")


def test_torchvision_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(VizError, match="--weights oxford"):
        W.load_weights("torchvision")
    assert W.default_weights_name() == "oxford"


def test_a_tampered_onnx_source_is_refused_before_conversion(tmp_path, monkeypatch):
    from importlib.machinery import ModuleSpec

    package = tmp_path / W.ONNX_PACKAGE
    onnx_file = package / W.ONNX_RELPATH
    onnx_file.parent.mkdir(parents=True)
    onnx_file.write_bytes(W.onnx_path().read_bytes()[:-1] + b"\0")  # one byte changed at the very end
    spec = ModuleSpec(W.ONNX_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    real_find_spec = W.importlib.util.find_spec
    monkeypatch.setattr(W.importlib.util, "find_spec",
                        lambda name, *a: spec if name == W.ONNX_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(VizError, match="fails its sha256 check"):
        W.onnx_path()
    onnx_file.unlink()
    with pytest.raises(VizError, match="is missing; reinstall"):
        W.onnx_path()


@pytest.mark.parametrize("content, message", [(b"truncated download", "failed to load"),
                                              ({"features.0.weight": torch.zeros(64, 3, 5, 5)}, "shape")])
def test_a_broken_torchvision_cache_file_is_reported(tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = W.torchvision_checkpoint()
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(VizError, match=message):
        W.load_torchvision(progress=False)


def test_the_default_says_when_it_falls_back_to_oxford(tmp_path, monkeypatch, model):
    from viz.engine.model import load_model

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # torchvision's checkpoint is not cached
    said = []
    assert W.load_weights("auto", notice=said.append).name == "oxford"
    # a model already built (the session's oxford model) says it too; naming oxford says nothing
    assert load_model(None, "cpu", channels_last=True, notice=said.append) is model
    load_model("oxford", "cpu", channels_last=True, notice=said.append)
    assert said == [W.FALLBACK_NOTICE, W.FALLBACK_NOTICE]
