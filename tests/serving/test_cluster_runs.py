"""Issue 14: the CLI's batch workloads on a local 2-worker Ray cluster give what they give in one process.

Precompute (the same images and records; resumable, and a finished one starts no worker; a worker killed mid-batch
loses only its batch) and the examples scan as a Ray Data pipeline (the same top lists, maxima and percentiles).
The app's job manager on Ray is tests/serving/test_cluster.py.
Select them with ``-m ray``."""

import hashlib
import json
import os
import signal
from dataclasses import replace

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (requirements-cluster.txt; `make test` installs it)")


from viz import make_settings, render
from viz.atlas import examples as ex
from viz.atlas.examples import examples_dir, scan
from viz.atlas.precompute import precompute
from viz.atlas.records import LayerDir, config_name, load_valid_record, validate_manifest
from viz.base.corpus import bundled
from viz.serving import cluster_runs

pytestmark = pytest.mark.ray

VOLATILE = ("seconds", "created")  # a record's wall time and date differ between any two runs


def gallery_state(root, s, layers):
    """Per channel: the image's sha256 and the record without its wall time and date."""
    out = {}
    for layer, chans in layers.items():
        d = LayerDir(root, s.weights, config_name(s), layer)
        manifest = validate_manifest(json.loads(d.manifest.read_text()))
        assert sorted(map(int, manifest["channels"])) == sorted(chans)
        for ch in chans:
            rec = load_valid_record(d, ch, replace(s, layer=layer).to_dict())
            assert rec is not None, (layer, ch)
            out[(layer, ch)] = (hashlib.sha256(d.image(ch).read_bytes()).hexdigest(),
                                {k: v for k, v in rec.items() if k not in VOLATILE})
    return out


def test_precompute_on_two_workers_matches_one_process(tmp_path, local_cluster):
    s = make_settings("conv1_1", "fourier", size=32, steps=6)
    layers = {"conv1_1": [0, 1, 2, 3, 4, 5], "conv2_1": [7, 9]}
    local = precompute(tmp_path / "local", s, layers, batch=2, device="cpu", retries=0)
    seen = []
    rep = cluster_runs.precompute("local", tmp_path / "ray", s, layers, batch=2, device="cpu", retries=0, workers=2,
                             events=lambda kind, info: seen.append((kind, info["pid"])))
    assert rep.rendered == local.rendered == 8 and rep.workers == 2 and rep.lost_workers == 0
    assert len({pid for kind, pid in seen if kind == "done"}) == 2  # both workers rendered
    assert gallery_state(tmp_path / "ray", s, layers) == gallery_state(tmp_path / "local", s, layers)
    again = cluster_runs.precompute("local", tmp_path / "ray", s, layers, batch=2, device="cpu", retries=0, workers=2)
    assert again.rendered == 0 and again.skipped == 8  # resumable: the same files, nothing left to do
    assert again.workers == 0  # and with nothing to do, no worker was started


def test_a_worker_killed_mid_batch_loses_only_its_batch(tmp_path, local_cluster):
    s = make_settings("conv3_1", "fourier", size=32, steps=40)
    layers = {"conv3_1": list(range(8))}
    inflight: dict[int, list] = {}
    killed: list = []

    def events(kind, info):
        if kind == "dispatch":
            inflight[info["pid"]] = info["channels"]
        elif kind == "done":
            inflight.pop(info["pid"], None)
            if not killed and inflight:  # the other worker is in the middle of a batch: kill it
                pid, chans = next(iter(inflight.items()))
                killed.append((pid, chans))
                os.kill(pid, signal.SIGKILL)

    rep = cluster_runs.precompute("local", tmp_path, s, layers, batch=2, device="cpu", retries=0, workers=2,
                             events=events)
    assert killed and rep.lost_workers == 1 and rep.requeued == 1
    assert rep.rendered == 8 and not rep.cancelled
    state = gallery_state(tmp_path, s, layers)
    lost = killed[0][1]
    again = render(s, lost, "cpu")  # the lost batch, rendered again by the survivor, is the batch itself
    for i, ch in enumerate(lost):
        assert state[("conv3_1", ch)][1]["final_activation"] == pytest.approx(float(again.final_activation[i]),
                                                                               abs=1e-4)


def same_examples(one: list[dict], other: list[dict]) -> bool:
    """The same activations in the same order, and the same photo positions for each of them, except among
    positions tied at exactly the list's last value (which of equal values make the cut is arbitrary; some
    saturated conv1_1 channels have dozens of exactly equal responses in one photo)."""
    if [e["activation"] for e in one] != [e["activation"] for e in other]:
        return False
    last = one[-1]["activation"] if one else None
    key = lambda e: (e["activation"], e["image"], e["scale"], e["box"])  # noqa: E731
    return sorted(map(key, (e for e in one if e["activation"] != last))) == \
        sorted(map(key, (e for e in other if e["activation"] != last)))


def test_examples_scan_as_ray_data_matches_one_process(tmp_path, local_cluster, model, monkeypatch):
    layers = ["conv1_1", "conv5_3"]  # the first layer and the whole network
    # 3 of the 11 photos in windows of 2 (the scan's checkpoint interval, 8 by default): two windows, one per
    # worker, merged here in corpus order, one of them of two photos
    monkeypatch.setattr(ex, "CHECKPOINT_EVERY", 2)
    corpus = replace(bundled(), images=bundled().images[:3])
    one = scan(model, corpus, tmp_path / "one", layers)
    seen: list[tuple[int, int]] = []
    two = cluster_runs.scan("local", "oxford", corpus, tmp_path / "ray", layers, workers=2,
                            progress=lambda count, total, name: seen.append((count, total)))
    assert seen == [(2, 3), (3, 3)]  # two windows came back and were merged in order
    assert two.images == one.images == 3 and two.skipped == one.skipped == {}
    a, b = examples_dir(tmp_path / "one", "oxford", "bundled"), examples_dir(tmp_path / "ray", "oxford", "bundled")
    for layer in layers:
        x, y = json.loads((a / f"{layer}.json").read_text()), json.loads((b / f"{layer}.json").read_text())
        assert {k: v for k, v in x.items() if k != "channels"} == {k: v for k, v in y.items() if k != "channels"}
        for cx, cy in zip(x["channels"], y["channels"], strict=True):
            assert (cx["max"], cx["p99"], cx["p999"]) == (cy["max"], cy["p99"], cy["p999"])  # exactly
            for end in ("top", "bottom"):
                assert same_examples(cx[end], cy[end]), (layer, end, cx[end], cy[end])
    ca, cb = json.loads((a / "corpus.json").read_text()), json.loads((b / "corpus.json").read_text())
    assert {k: v for k, v in ca.items() if k != "seconds"} == {k: v for k, v in cb.items() if k != "seconds"}
    assert not (b / ".scan-state.pt").exists()
