"""Dataset examples: any folder (broken files included), resume after kill -9, one size-independent reference,
the committed examples, and the Your photo page."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import cli
from viz import make_settings
from viz.atlas.examples import committed_dir, examples_dir, read_layer, reference
from viz.base.corpus import bundled, load_rgb
from viz.serving.jobs import JobManager, wait

ROOT = Path(__file__).resolve().parents[2]


def photo(seed: int, size=(96, 128)) -> Image.Image:
    """A crop of a bundled photo (real image statistics), different for every seed."""
    base = load_rgb(bundled().path("skimage/astronaut.png"))
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, 512 - size[0]), rng.integers(0, 512 - size[1])
    return Image.fromarray(base[y:y + size[0], x:x + size[1]])


def make_corpus(root: Path) -> dict[str, str]:
    """Every format and mode a user's folder may hold, and broken files; returns the expected skips."""
    (root / "sub" / "deeper").mkdir(parents=True)
    photo(0).save(root / "a.png")
    photo(1).save(root / "sub" / "b.jpg", quality=90)
    photo(2).convert("L").save(root / "gray.png")
    photo(3).convert("CMYK").save(root / "cmyk.jpg")
    photo(4).save(root / "sub" / "deeper" / "c.webp")
    photo(5).save(root / "d.bmp")
    photo(6).save(root / "e.tiff")
    rgba = photo(7).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "alpha.png")
    sixteen = (np.asarray(photo(8).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(root / "sixteen.png")  # mode I;16
    rotated = photo(9, size=(64, 128))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rotated.save(root / "exif.jpg", exif=exif)
    (root / "empty.jpg").write_bytes(b"")
    (root / "junk.png").write_bytes(os.urandom(300))
    (root / "notes.jpg").write_text("not an image")
    Image.new("L", (8000, 8000)).save(root / "huge.png")  # 64 MP: skipped before decoding
    (root / ".hidden.png").write_bytes(b"")
    (root / "readme.txt").write_text("ignored: not an image extension")
    return {"empty.jpg": "empty file", "junk.png": "not a readable image", "notes.jpg": "not a readable image",
            "huge.png": "too many pixels"}


def test_a_users_folder_with_every_format_and_broken_files(tmp_path):
    corpus_dir = tmp_path / "my photos"
    skips = make_corpus(corpus_dir)
    assert load_rgb(corpus_dir / "exif.jpg").shape[:2] == (128, 64)  # EXIF orientation applied
    for name in ("gray.png", "cmyk.jpg", "alpha.png", "sixteen.png"):
        arr = load_rgb(corpus_dir / name)
        assert arr.dtype == np.uint8 and arr.shape[2] == 3 and arr.std() > 5, name
    p = cli("examples", "--images", str(corpus_dir), "--layers", "conv1_1,conv3_1", "--top", "4",
                "--weights", "oxford", "--out", str(tmp_path / "g"))
    assert p.returncode == 0, p.stderr[-1500:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["images"] == 14 and summary["read"] == 10 and summary["skipped"] == 4
    assert {k: v.split(" (")[0] for k, v in summary["skipped_why"].items()} == skips
    assert sum(line.startswith("note: skipped") for line in p.stderr.splitlines()) == 4
    d = examples_dir(tmp_path / "g", "oxford", "my_photos")
    corpus = json.loads((d / "corpus.json").read_text())
    assert corpus["root"] == str(corpus_dir.resolve()) and "sub/deeper/c.webp" in corpus["images"]
    for layer, channels in (("conv1_1", 64), ("conv3_1", 256)):
        ex = read_layer(d, layer)
        assert len(ex.channels) == channels
        for ch in ex.channels[:20]:
            acts = [e["activation"] for e in ch["top"]]
            assert 1 <= len(acts) <= 4 and acts == sorted(acts, reverse=True) and acts[0] == ch["max"]
            assert ch["p99"] <= ch["p999"] * 1.05 + 1e-3 and ch["p999"] <= ch["max"] * 1.05 + 1e-3
            negs = [e["activation"] for e in ch["bottom"]]
            assert negs == sorted(negs) and negs[0] <= acts[-1]
            for e in ch["top"] + ch["bottom"]:
                h, w = load_rgb(corpus_dir / e["image"]).shape[:2]
                left, top, right, bottom = e["box"]
                assert 0 <= left < right <= w and 0 <= top < bottom <= h, (e, w, h)
    assert not (tmp_path / "g" / "oxford" / "examples" / "my_photos" / "a.png").exists()  # no copies


def test_the_strongest_example_is_where_the_network_says(tmp_path, model):
    """Recompute a channel's map on its top example's photo: the recorded activation is its maximum there."""
    from viz.atlas.examples import forward_all, resized

    corpus_dir = tmp_path / "c"
    corpus_dir.mkdir()
    for i in range(3):
        photo(10 + i).save(corpus_dir / f"{i}.png")
    p = cli("examples", "--images", str(corpus_dir), "--layers", "conv2_1", "--top", "3", "--weights", "oxford",
                "--out", str(tmp_path / "g"))
    assert p.returncode == 0, p.stderr[-1000:]
    ex = read_layer(examples_dir(tmp_path / "g", "oxford", "c"), "conv2_1")
    for channel in (0, 17, 101):
        best = ex.channels[channel]["top"][0]
        image = load_rgb(corpus_dir / best["image"])
        x, _ = resized(image, best["scale"])
        seen = {}
        forward_all(model, x, lambda layer, a: seen.setdefault(layer, a))
        assert float(seen["conv2_1"][channel].max()) == pytest.approx(best["activation"], rel=1e-3, abs=1e-3)


def test_kill_9_mid_scan_resumes_to_the_same_result(tmp_path):
    corpus_dir = tmp_path / "many"
    corpus_dir.mkdir()
    for i in range(16):  # two checkpoints' worth (one every 8 images)
        photo(100 + i, size=(128, 128)).save(corpus_dir / f"{i:02d}.png")
    args = ["examples", "--images", str(corpus_dir), "--layers", "conv4_3", "--top", "4", "--weights", "oxford"]
    state = examples_dir(tmp_path / "killed", "oxford", "many") / ".scan-state.pt"
    proc = subprocess.Popen([sys.executable, "-m", "viz", *args, "--out", str(tmp_path / "killed")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not state.is_file():
            assert proc.poll() is None, "the scan ended before its first checkpoint"
            time.sleep(0.01)
        assert state.is_file(), "no checkpoint within 240 s"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    resumed = cli(*args, "--out", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed_after"] >= 8 and summary["read"] == 16 and not state.exists()
    whole = cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0
    a = json.loads((examples_dir(tmp_path / "killed", "oxford", "many") / "conv4_3.json").read_text())
    b = json.loads((examples_dir(tmp_path / "whole", "oxford", "many") / "conv4_3.json").read_text())
    assert a["channels"] == b["channels"]


def test_bad_corpus_arguments_are_one_line(tmp_path):
    for images, msg in ((str(tmp_path / "nope"), "is not a directory"), (str(tmp_path), "no images")):
        p = cli("examples", "--images", images, "--out", str(tmp_path / "g"), "--weights", "oxford")
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr


def test_committed_examples_cover_every_channel():
    from viz import LAYER_NAMES, LAYERS

    for layer in LAYER_NAMES:
        ex = read_layer(committed_dir("oxford"), layer)
        assert len(ex.channels) == LAYERS[layer].channels
        assert all(ch["top"] and ch["bottom"] for ch in ex.channels), layer
        assert np.isfinite(ex.reference()).all(), layer
    corpus = json.loads((committed_dir("oxford") / "corpus.json").read_text())
    assert corpus["read"] == len(corpus["images"]) == 11 and set(corpus["licences"]) == set(corpus["images"])


def test_one_reference_whatever_the_size_and_the_page(tmp_path, model):
    """The generator's number at two sizes and the gallery's record all use the channel's examples maximum."""
    from viz.atlas.gallery import Gallery

    ref = reference(model, "conv5_1")
    m = JobManager(disk_cache=None)
    try:
        jobs = [m.submit(make_settings("conv5_1", size=size, steps=4), 104, "cpu") for size in (32, 48)]
        for job in jobs:
            assert wait(job, 120).state == "done"
            assert job.result.natural == pytest.approx(ref[104])
    finally:
        m.shutdown()
    rec = Gallery(ROOT / "gallery").layer("oxford", "fourier-128px-128st", "conv5_1").records[104]
    assert rec["natural_max"] == pytest.approx(ref[104], abs=1e-3)
    assert rec["activation_ratio"] == pytest.approx(rec["final_activation"] / ref[104], rel=1e-3)


def test_your_photo_page(tmp_path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("app_pages/photo.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="photo_layer").set_value("conv5_1").run()
    assert not at.exception
    assert any("The 12 channels of conv5_1 that fire most" in s.value for s in at.subheader)
    # each of the 12 ranked channels links to its gallery detail (the groups below have links of their own)
    ranked = [pl.proto for pl in at.get("page_link") if re.fullmatch(r"channel \d+", pl.proto.label)]
    assert len(ranked) == 12 and all("layer=conv5_1" in q.query_string for q in ranked)
    assert len({q.label for q in ranked}) == 12


def _pending(maps):
    from viz.atlas.extremes import Pending

    p = Pending(maps[0].shape[0], sum(a.shape[1] * a.shape[2] for a in maps))
    for k, a in enumerate(maps):
        p.add(a, k, 0)
    return p


@pytest.mark.parametrize("shape", [(3, 1, 7), (5, 10, 100), (4, 223, 225), (64, 64, 64)])
def test_block_search_finds_the_best_fine_blocks(shape):
    """The two-stage search (coarse blocks first, padded partial block) gives exactly the maxima (minima) of each
    row's m best runs of 8 values, as a brute force over all runs does, at both ends, for all rows or some, and
    whether the map is copied into a buffer or searched where it lies."""
    import torch

    from viz.atlas.extremes import FINE, Blocks, Pending

    a = torch.randn(shape, generator=torch.Generator().manual_seed(shape[2]))
    a[0, -1, -1], a[-1, -1, -1] = 50.0, -50.0  # the extremes of two rows in the partial last block
    c, n = shape[0], shape[1] * shape[2]
    flat = a.reshape(c, n)
    runs = torch.nn.functional.pad(flat, (0, -n % FINE), value=float("nan")).view(c, -1, FINE)
    sources = [_pending([a])]
    if n % 32 == 0:
        sources.append(Pending.wrap(a.clone(), 0, 0))
    for p in sources:
        for m in (1, 4, 24):
            blocks = Blocks(p, min(m, n))
            high, low = blocks.extremes()
            assert torch.equal(high, flat.amax(dim=1)) and torch.equal(low, flat.amin(dim=1))
            for rows in (torch.arange(c), torch.tensor([0, c - 1])):
                for largest in (True, False):
                    best = runs.nan_to_num(-torch.inf if largest else torch.inf)
                    best = best.amax(dim=2) if largest else best.amin(dim=2)
                    want = best[rows].topk(min(m, best.shape[1]), dim=1, largest=largest).values
                    v, i = blocks.candidates(rows, largest)
                    assert torch.equal(v, want)
                    assert torch.equal(torch.gather(flat[rows], 1, i), v)  # the positions hold those values
                    assert all(len(set(run)) == len(run) for run in (i // FINE).tolist())  # one per run


def test_peaks_are_the_strongest_local_maxima():
    """On smooth maps the folded lists hold exactly the strongest local maxima of all the maps (an exhaustive
    search with max-pooling), at both ends, each with its map and position, however the maps were batched; the
    fold reads a map when it is added (the network's in-place ReLU changes it right after)."""
    import torch
    import torch.nn.functional as F

    from viz.atlas.extremes import Folder, LayerState, window

    layer, top = "conv3_2", 5  # window 5: no stronger position within 2 in both directions
    r = window(layer) // 2
    g = torch.Generator().manual_seed(3)
    maps = [F.avg_pool2d(torch.randn(7, 30 + 5 * k, 41, generator=g)[None], 5, 1, 2)[0] for k in range(3)]
    state = LayerState(7, top)
    folder = Folder({layer: state})
    for k, a in enumerate(maps):
        seen = a.clone()
        folder.add(layer, seen, k, 0)
        seen.clamp_(min=0)
    folder.flush()
    for sign, values, where in ((1, state.values, state.where), (-1, -state.neg_values, state.neg_where)):
        for ch in range(7):
            found = []
            for k, a in enumerate(maps):
                x = sign * a[ch][None, None]
                for y, xx in (x >= F.max_pool2d(x, 2 * r + 1, 1, r))[0, 0].nonzero().tolist():
                    found.append((float(a[ch, y, xx]), k, y, xx))
            want = sorted(found, key=lambda t: -sign * t[0])[:top]
            got = [(float(v), k, y, x) for v, (k, _, y, x) in zip(values[ch], where[ch].tolist())]
            assert [w[1:] for w in want] == [w[1:] for w in got]
            assert [w[0] for w in want] == pytest.approx([w[0] for w in got])


def _nest(root, depth: int) -> None:
    """``root/d/d/.../d/deep.jpg``, ``depth`` folders deep, built through folder handles."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        photo(99).save(f"/proc/self/fd/{fd}/deep.jpg")
    finally:
        os.close(fd)


def _unnest(root, depth: int) -> None:
    fds = [os.open(root, os.O_RDONLY)]
    for _ in range(depth):
        fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
    os.unlink("deep.jpg", dir_fd=fds[-1])
    for i in range(depth, 0, -1):
        os.close(fds[i])
        os.rmdir("d", dir_fd=fds[i - 1])
    os.close(fds[0])


def test_a_hostile_folder_is_scanned_without_hanging_or_a_traceback(tmp_path):
    """Issue 24: a link to /dev/zero and a FIFO named like photos are not images (only regular files are listed and
    read, never more than the size cap), and folders nested 1,500 deep are walked without recursion (the photo at
    the bottom is found and read)."""
    corpus_dir = tmp_path / "hostile"
    corpus_dir.mkdir()
    photo(1).save(corpus_dir / "a.jpg")
    photo(2).save(corpus_dir / "b.png")
    (corpus_dir / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(corpus_dir / "fifo.jpg")
    _nest(corpus_dir, 1500)
    try:
        p = cli("examples", "--images", str(corpus_dir), "--layers", "conv1_1", "--top", "2", "--weights",
                    "oxford", "--out", str(tmp_path / "g"))
    finally:
        _unnest(corpus_dir, 1500)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-1500:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["read"] == 3 and summary["skipped"] == 0


def test_two_folders_with_one_name_keep_their_own_examples(tmp_path):
    """Issue 24: ``A/pics`` then ``B/pics`` into one ``--out``: B's examples go to ``pics-<digest>`` and A's stay."""
    out = tmp_path / "g"
    dirs = []
    for side, seeds in (("A", (1, 2)), ("B", (3, 4, 5))):
        d = tmp_path / side / "pics"
        d.mkdir(parents=True)
        for s in seeds:
            photo(s).save(d / f"{side}{s}.jpg")
        p = cli("examples", "--images", str(d), "--layers", "conv1_1", "--top", "2", "--weights", "oxford",
                    "--out", str(out))
        assert p.returncode == 0, p.stderr[-1000:]
        dirs.append(Path(json.loads(p.stdout.strip().splitlines()[-1])["out"]))
    assert dirs[0].name == "pics" and dirs[1].name.startswith("pics-") and "holds the examples of" in p.stderr
    assert json.loads((dirs[0] / "corpus.json").read_text())["images"] == ["A1.jpg", "A2.jpg"]
    assert json.loads((dirs[1] / "corpus.json").read_text())["images"] == ["B3.jpg", "B4.jpg", "B5.jpg"]


def test_a_finished_scan_is_extended_not_redone(tmp_path):
    """Issue 24: scanning a scanned folder again reads nothing; a folder that gained a photo reads only that one,
    with the same lists as a fresh scan of all of them; a photo changed since is a scan from the start. The seconds
    in corpus.json count every run."""
    corpus_dir = tmp_path / "grow"
    corpus_dir.mkdir()
    for i in range(3):
        photo(200 + i).save(corpus_dir / f"{i}.png")
    args = ["examples", "--images", str(corpus_dir), "--layers", "conv2_1", "--top", "3", "--weights", "oxford"]

    def run(out: str) -> dict:
        p = cli(*args, "--out", str(tmp_path / out))
        assert p.returncode == 0, p.stderr[-1000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    first = run("g")
    assert (first["read"], first["new"]) == (3, 3)
    again = run("g")
    assert (again["read"], again["new"], again["resumed_after"]) == (3, 0, 3)
    photo(300).save(corpus_dir / "1b.png")  # sorts between 1.png and 2.png: every later index moves
    grown = run("g")
    assert (grown["read"], grown["new"], grown["resumed_after"]) == (4, 1, 3)
    meta = json.loads((examples_dir(tmp_path / "g", "oxford", "grow") / "corpus.json").read_text())
    assert meta["seconds"] >= grown["seconds"] - 0.1 and meta["seconds"] == grown["seconds"]
    assert grown["seconds"] > first["seconds"] - 0.1  # the runs add up
    fresh = run("fresh")
    assert (fresh["read"], fresh["new"]) == (4, 4)
    a = json.loads((examples_dir(tmp_path / "g", "oxford", "grow") / "conv2_1.json").read_text())
    b = json.loads((examples_dir(tmp_path / "fresh", "oxford", "grow") / "conv2_1.json").read_text())
    assert a["channels"] == b["channels"]
    photo(400).save(corpus_dir / "0.png")  # a photo read before, changed: its examples cannot be taken out
    changed = run("g")
    assert (changed["read"], changed["new"]) == (4, 4)
