"""Every bad input the hosting issue listed: one line in the CLI (exit 2) or a friendly note, never a traceback."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import cli, run_cli
from viz import VizError, make_settings
from viz.atlas.gallery import Gallery
from viz.atlas.precompute import precompute
from viz.atlas.records import LayerDir, config_name, load_valid_record
from viz.base.corpus import UPLOAD_SIDE
from viz.dashboard.links import parse_link
from viz.engine.weights import check_state_dict
from viz.serving.budget import Limits


def one_line_error(p, msg):
    assert p.returncode == 2, (p.returncode, p.stderr[-500:])
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and msg in errors[0], p.stderr[-500:]
    # and it is the last word: what comes before it is the run's own header, notes and progress, never more error
    assert lines[-1] == errors[0], p.stderr[-500:]


@pytest.mark.parametrize("args,msg", [
    (["--channel", "²"], "channel must be a whole number"),
    (["--channel", "1", "--steps", "²"], "steps must be a whole number"),
    (["--channel", "1", "--size=--16"], "size must be a whole number"),
    (["--channel", "1", "--size", "٣٢"], "size must be a whole number"),  # Arabic-Indic digits
])
def test_unicode_and_doubled_signs_are_not_numbers(tmp_path, args, msg):
    p = cli("render", "--layer", "conv1_1", *args, "--out", str(tmp_path / "x.png"))
    one_line_error(p, msg)


def test_deep_link_with_a_superscript_channel_is_a_problem_not_a_crash():
    link = parse_link({"layer": "conv5_1", "channel": "\u00b2"})
    assert link.channel is None and "whole number" in link.problems[0]


@pytest.mark.parametrize("out,msg", [
    ("", "--out must name a .png file"),
    ("x" * 300 + ".png", "file name is 304 bytes long"),
    ("/proc/nope/x.png", "cannot write in --out's directory"),
])
def test_render_out_is_checked_before_rendering(tmp_path, out, msg):
    p = cli("render", "--layer", "conv5_3", "--channel", "1", "--size", "256", "--steps", "500",
                "--weights", "oxford", "--out", out if not out.startswith("x") else str(tmp_path / out))
    one_line_error(p, msg)
    # refused before a 500-step render: the render's progress bar (its first line comes at step 0) never started
    assert "step" not in p.stderr.replace("--steps", "") and "/500" not in p.stderr, p.stderr[-500:]


def test_precompute_out_is_checked_before_rendering(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    base = ["precompute", "--layers", "conv5_3", "--channels", "0-7", "--size", "128", "--steps", "400",
            "--weights", "oxford"]
    for out, msg in ((str(afile), "is a file, not a directory"), (str(afile / "sub"), "a part of that path is a file"),
                     ("/proc/gallery", "cannot write in --out"), ("", "--out must name a directory")):
        p = cli(*base, "--out", out)
        one_line_error(p, msg)
        # refused before any of the 8 channels' 400 steps: the precompute's progress bar never started
        assert "img-step" not in p.stderr and "note:" not in p.stderr, p.stderr[-500:]


def _weights_file(tmp_path, oxford_state_dict, change):
    sd = {k: v.clone() for k, v in oxford_state_dict.items()}
    change(sd)
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("change,msg", [
    (lambda sd: sd.__setitem__("features.0.weight", sd["features.0.weight"].to_sparse()), "not a dense"),
    (lambda sd: sd.__setitem__("features.0.bias", torch.empty(64, device="meta")), "not a dense"),
    (lambda sd: [t.mul_(1e38) for t in sd.values()], "no trained VGG16"),
])
def test_weights_without_data_or_with_absurd_values_are_refused(tmp_path, oxford_state_dict, change, msg):
    try:
        path = _weights_file(tmp_path, oxford_state_dict, change)
    except (RuntimeError, NotImplementedError):
        pytest.skip("torch cannot save this tensor kind")
    p = cli("render", "--layer", "conv1_1", "--channel", "0", "--size", "32", "--steps", "2",
                "--weights", str(path), "--out", str(tmp_path / "x.png"))
    if p.returncode == 2 and "not a loadable" in p.stderr:  # torch refused to load it: also one clear line
        one_line_error(p, "not a loadable")
    else:
        one_line_error(p, msg)
    assert not (tmp_path / "x.png").exists()


def test_check_state_dict_names_meta_tensors(oxford_state_dict):
    sd = dict(oxford_state_dict)
    sd["features.0.bias"] = torch.empty(64, device="meta")
    with pytest.raises(VizError, match="not a dense"):
        check_state_dict(sd, "w.pt")


def test_a_diverging_render_is_one_line_and_never_invalid_json(tmp_path, oxford_state_dict):
    # just under the plausibility bound, yet enough to overflow fp32 deep in the network (measured: NaN at conv5_3)
    def scale(sd):
        for k, t in sd.items():
            if k.endswith("weight"):
                t.mul_(900 / float(t.abs().max()))
    path = _weights_file(tmp_path, oxford_state_dict, scale)
    p = cli("render", "--layer", "conv5_3", "--channel", "0", "--size", "32", "--steps", "2",
                "--weights", str(path), "--out", str(tmp_path / "x.png"))
    one_line_error(p, "diverged")
    assert not (tmp_path / "x.png").exists() and "NaN" not in p.stdout
    p = cli("precompute", "--layers", "conv5_3", "--channels", "0-1", "--size", "32", "--steps", "2",
                "--weights", str(path), "--out", str(tmp_path / "g"))
    one_line_error(p, "diverged")
    assert not list((tmp_path / "g").rglob("c*.json"))  # no record that would be invalid forever


# ----------------------------------------------------------------------------------------------- gallery files
def _tiny_gallery(root):
    s = make_settings("conv1_1", "fourier", size=32, steps=4)
    precompute(root, s, {"conv1_1": [0, 1, 2]}, device="cpu", retries=0)
    return s, LayerDir(root, "oxford", config_name(s), "conv1_1")


def test_a_deeply_nested_manifest_or_record_is_reported_not_a_crash(tmp_path):
    s, d = _tiny_gallery(tmp_path)
    d.manifest.write_text("[" * 200_000)
    d.record(1).write_text("[" * 200_000)
    view = Gallery(tmp_path).layer("oxford", config_name(s), "conv1_1")
    assert view.channels() == [0, 2]
    assert any("manifest" in p for p in view.problems) and any("channel 1" in p for p in view.problems)


def test_junk_bytes_with_a_matching_hash_are_not_an_image(tmp_path):
    import hashlib

    s, d = _tiny_gallery(tmp_path)
    junk = os.urandom(500)
    d.image(2).write_bytes(junk)
    rec = json.loads(d.record(2).read_text())
    rec["image_sha256"] = hashlib.sha256(junk).hexdigest()
    d.record(2).write_text(json.dumps(rec))
    d.manifest.unlink()
    view = Gallery(tmp_path).layer("oxford", config_name(s), "conv1_1")
    assert 2 in view.records and view.image_bytes(2) is None and view.image_bytes(0) is not None


def test_markdown_in_evidence_is_shown_as_plain_text():
    from app_pages._results import plain

    hostile = "![x](http://127.0.0.1:9/pixel.png) [link](http://evil) **bold** <img src=x>"
    shown = plain(hostile)

    # CommonMark: a backslash before ASCII punctuation makes it literal; nothing may be left unescaped
    assert not re.search(r"(?<!\\)[\[\]()<>!*_`]", shown), shown
    assert re.sub(r"\\(.)", r"\1", shown) == hostile  # and it reads the same


def test_bad_operator_settings_are_one_log_line_and_a_default(monkeypatch, capfd):
    monkeypatch.setenv("VIZ_MAX_QUEUED", "abc")
    monkeypatch.setenv("VIZ_MEMORY_GB", "-3")
    monkeypatch.setenv("VIZ_MAX_JOB_SECONDS", "nan")
    lim = Limits.from_env()
    assert (lim.max_queued, lim.memory_gb, lim.max_job_seconds) == (16, 2.5, 120.0)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("viz: VIZ_") and "using the default" in line for line in err)


# ------------------------------------------------------------------------------------- precompute: retry, lock
PRE = ["precompute", "--layers", "conv5_1", "--channels", "104,116", "--method", "seed", "--size", "32",
       "--weights", "oxford", "--batch", "1"]


def test_kill_9_in_the_retry_pass_resumes_the_retry_and_reports_the_flags(tmp_path):
    """seed leaves conv5_1:104 blank (flagged), so it is retried; kill -9 during that retry, then rerun."""
    s = make_settings("conv5_1", "seed", size=32, steps=150)
    d = LayerDir(tmp_path, "oxford", config_name(s), "conv5_1")
    args = [*PRE, "--steps", "150", "--retries", "1", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "viz", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all(load_valid_record(d, c, s.to_dict()) for c in (104, 116)):
            assert proc.poll() is None, "precompute ended before its retry pass"
            time.sleep(0.01)
        time.sleep(0.5)  # inside the retry (300 steps at conv5_1)
        assert proc.poll() is None, "the retry pass ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    rec = load_valid_record(d, 104, s.to_dict())
    assert rec["flags"] and rec.get("tries", rec["attempts"]) == 1  # the retry never finished
    p = cli(*args)
    assert p.returncode == 0, p.stderr[-500:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["rendered"] == 0 and report["retried"] == 0  # the retry itself is attempt 2, not a new render
    rec = load_valid_record(d, 104, s.to_dict())
    assert rec["tries"] == 2  # the lost retry was run
    assert "conv5_1:104" in report["flagged"]["blank"]  # and the summary shows what stays flagged
    again = json.loads(cli(*args).stdout.strip().splitlines()[-1])
    assert again["skipped"] == 2 and "conv5_1:104" in again["flagged"]["blank"]  # nothing left, flags still shown


def test_a_second_precompute_on_the_same_out_is_refused_and_deletes_nothing(tmp_path):
    """The first run writes its first record (its start-up cleanup is over) with 31 channels of 200 steps still to
    go; a second run on the same --out meanwhile is one line, and deletes nothing of the first's."""
    s = make_settings("conv5_1", "seed", size=32, steps=200)
    args = [*PRE[:4], "0-31", *PRE[5:], "--steps", "200", "--retries", "0", "--out", str(tmp_path)]
    first = subprocess.Popen([sys.executable, "-m", "viz", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        d = LayerDir(tmp_path, "oxford", config_name(s), "conv5_1")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not d.record(0).is_file():
            assert first.poll() is None, "the first precompute ended early"
            time.sleep(0.01)
        assert d.record(0).is_file(), "the first precompute wrote nothing in 240 s"
        live = d.path / ".123-live.tmp"
        live.parent.mkdir(parents=True, exist_ok=True)
        live.write_text("the first run's file")
        second = run_cli(*args, timeout=120)
        one_line_error(second, f"another precompute (pid {first.pid}) is writing to")
        assert live.read_text() == "the first run's file"
        assert first.poll() is None, "the first run ended before the second was refused: give it more channels"
    finally:
        first.kill()
        first.wait(30)


DECODE_PROBE = """
import sys
from pathlib import Path
from viz import VizError
from viz.atlas.photo import network_input
from viz.base.corpus import UPLOAD_SIDE, decode
from viz.base.memory import peak_bytes, reset_peak
data = Path(sys.argv[1]).read_bytes()
before = reset_peak()  # each step's peak its own, from what is resident before it
decode_b = input_b = 0
try:
    image = decode(data, 1 << 30, UPLOAD_SIDE)
    decode_b = peak_bytes() - before
    resident = reset_peak()
    shape = tuple(network_input(image)[0].shape)
    input_b = peak_bytes() - resident
except VizError as exc:
    decode_b = peak_bytes() - before
    shape = str(exc)
print(decode_b >> 20, input_b >> 20, shape)
"""


@pytest.mark.parametrize("kind", ["strip", "jpeg", "tiff16", "float", "rgba"])
def test_small_files_that_decode_huge_take_bounded_memory(tmp_path, kind):
    """Issue 24: an upload is decoded at most UPLOAD_SIDE large (a JPEG at a reduced DCT scale, others shrunk
    before any conversion) and cut to the network's input before it becomes floats; a strip is refused. Each
    file is decoded in a fresh process whose peak resident memory is read (a memory check, not a timing one)."""
    import numpy as np
    from PIL import Image

    path = tmp_path / f"{kind}.img"
    if kind == "strip":  # 573 bytes of PNG, 20000 x 8: 224 x 560,000 floats if scaled before a crop
        Image.fromarray(np.zeros((8, 20000, 3), np.uint8)).save(path, format="PNG")
    elif kind == "jpeg":  # under a megabyte, 49 megapixels
        Image.fromarray(np.full((7000, 7000, 3), 128, np.uint8)).save(path, format="JPEG", quality=50)
    elif kind == "tiff16":
        Image.fromarray(np.arange(5000 * 6000, dtype=np.uint32).reshape(5000, 6000).astype(np.uint16)).save(
            path, format="TIFF", compression="tiff_deflate")
    elif kind == "float":
        Image.fromarray(np.linspace(0, 1, 5000 * 5000, dtype=np.float32).reshape(5000, 5000)).save(
            path, format="TIFF", compression="tiff_deflate")
    else:
        Image.fromarray(np.full((6000, 6000, 4), 200, np.uint8)).save(path, format="PNG")
    p = subprocess.run([sys.executable, "-c", DECODE_PROBE, str(path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-1000:]
    decode_mb, input_mb, shape = p.stdout.split(" ", 2)
    if kind == "strip":
        assert "too thin (20000 x 8)" in shape
    else:
        assert shape.strip().startswith("(1, 3, 224,"), shape
    # Pillow decodes a PNG or TIFF whole, in its own mode, before anything can shrink it: that once, and little
    # beside it (as floats the pixels would take 4-8 times as much; a whole-image RGBA reduce, which makes a
    # premultiplied copy, or a 16-bit array view, a copy, twice as much). A JPEG is decoded at a reduced scale.
    with Image.open(path) as im:
        own_mb = im.size[0] * im.size[1] * {"RGBA": 4, "F": 4, "I;16": 2}.get(im.mode, 1) / 2**20
    bound = {"strip": 40, "jpeg": 80}.get(kind, 1.25 * own_mb + 40)
    assert int(decode_mb) < bound, f"{kind}: the peak grew {decode_mb} MB decoding {own_mb:.0f} MB of pixels"
    # then the network's input: at most the decoded image (UPLOAD_SIDE on its longer side) as floats, once
    assert int(input_mb) < 1.25 * UPLOAD_SIDE**2 * 3 * 4 / 2**20, f"{kind}: the input took {input_mb} MB"


def test_an_unreachable_ray_address_is_one_line_on_the_cli(tmp_path):
    """Issue 24: ``--ray`` naming a port nobody listens on ends with one line and exit status 2, not a hang (the
    subprocess's timeout is only the test's deadline)."""
    p = run_cli("precompute", "--layers", "conv1_1", "--channels", "0", "--size", "32", "--steps", "2",
                "--ray", "127.0.0.1:1", "--out", str(tmp_path / "g"), timeout=240)
    one_line_error(p, "cannot reach the Ray cluster at '127.0.0.1:1'")


def test_the_app_renders_in_process_when_its_ray_address_is_unreachable(monkeypatch):
    """Issue 24: ``VIZ_RAY_ADDRESS`` naming a dead head: the server renders in this process and its sidebar line
    says why (health stays honest), instead of every page hanging."""
    from viz.serving.jobs import JobSpec, LocalExecutor, get_manager, reset_manager, wait

    monkeypatch.setenv("VIZ_RAY_ADDRESS", "127.0.0.1:1")
    reset_manager()
    try:
        m = get_manager()
        assert isinstance(m.executor, LocalExecutor)
        assert m.notice and "rendering in this process instead" in m.notice
        job = wait(m.submit_many([JobSpec(make_settings("conv1_1", size=32, steps=2), 0, "cpu")])[0], 120)
        assert job.state == "done"
    finally:
        reset_manager()
