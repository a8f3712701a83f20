import json
import subprocess
import sys

import pytest
from PIL import Image


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "viz", *args], capture_output=True, text=True, timeout=timeout)


def test_render_writes_png_and_json(tmp_path):
    out = tmp_path / "c.png"
    p = run_cli("render", "--layer", "conv2_1", "--channel", "5", "--size", "32", "--steps", "6",
                "--weights", "oxford", "--out", str(out))
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("layer", "channel", "method", "weights", "size", "steps", "seed", "final_activation", "seconds"):
        assert key in rec
    assert (rec["layer"], rec["channel"], rec["method"], rec["weights"]) == ("conv2_1", 5, "fourier", "oxford")
    with Image.open(out) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert "ETA" in p.stderr or "<" in p.stderr  # the progress bar shows elapsed<remaining


@pytest.mark.parametrize("args,msg", [
    (["--layer", "../../etc/passwd", "--channel", "1"], "unknown layer"),
    (["--layer", "conv1_1", "--channel", "-1"], "channel"),
    (["--layer", "conv1_1", "--channel", "64"], "out of range"),
    (["--layer", "conv1_1", "--channel", "x"], "whole number"),
    (["--layer", "conv1_1", "--channel", "1", "--steps", "0"], "steps"),
    (["--layer", "conv1_1", "--channel", "1", "--size", "99999"], "size"),
    (["--layer", "conv1_1", "--channel", "1", "--lr", "-1"], "learning rate"),
    (["--layer", "conv1_1", "--channel", "1", "--method", "magic"], "unknown method"),
    (["--layer", "conv1_1", "--channel", "1", "--weights", "/no/such.pt"], "not found"),
    (["--layer", "conv1_1"], "required"),
])
def test_bad_arguments_one_line_no_traceback(tmp_path, args, msg):
    p = run_cli("render", *args, "--out", str(tmp_path / "x.png"), timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and msg in p.stderr
    assert not (tmp_path / "x.png").exists()
