import json

import pytest
from PIL import Image

from tests.helpers import cli, run_cli


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


def test_maco_writes_its_attribution_map(tmp_path):
    """MACO from the CLI: the image, its attribution map beside it, and the naturalness measures in the line."""
    out = tmp_path / "m.png"
    p = cli("render", "--layer", "conv3_1", "--channel", "7", "--method", "maco", "--size", "32", "--steps", "6",
                "--out", str(out))
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    assert rec["method"] == "maco" and rec["attribution"] == str(tmp_path / "m.attribution.png")
    assert 0 <= rec["clipped"] <= 1 and rec["colourfulness"] >= 0 and rec["colour_distance"] >= 0
    with Image.open(out) as im, Image.open(rec["attribution"]) as amap:
        assert im.size == amap.size == (32, 32) and amap.mode == "L"
        assert amap.getextrema()[1] == 255  # normalized: the strongest pixels are white


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
    p = cli("render", *args, "--out", str(tmp_path / "x.png"))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and msg in p.stderr
    assert not (tmp_path / "x.png").exists()


def test_circuit_prints_one_json_line_with_both_measures():
    p = cli("circuit", "--layer", "conv5_1", "--channel", "104", "--top", "3", "--weights", "oxford")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip())
    assert (rec["layer"], rec["channel"], rec["direction"], rec["by"], rec["other_layer"]) == \
        ("conv5_1", 104, "in", "weight", "conv4_3")
    assert "kernel sum" in rec["measure"] and len(rec["excite"]) == 3 and len(rec["inhibit"]) == 3
    sums = [lk["weight_sum"] for lk in rec["excite"]]
    assert sums == sorted(sums, reverse=True) and sums[-1] > 0 > rec["inhibit"][0]["weight_sum"]
    assert len(rec["excite"][0]["kernel"]) == 3 and len(rec["excite"][0]["kernel"][0]) == 3
    p = cli("circuit", "--layer", "conv5_1", "--channel", "104", "--by", "contribution", "--direction", "out",
                "--top", "2", "--weights", "oxford")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip())
    assert rec["other_layer"] == "conv5_2" and "share" in rec["measure"]
    assert all(lk["share"] == lk["strength"] for lk in rec["excite"])
    p = cli("circuit", "--layer", "conv2_2", "--channel", "7", "--depth", "2", "--top", "1", "--weights", "oxford")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip())
    assert rec["other_layer"] == "conv1_2" and len(rec["excite"][0]["kernel"]) == 10  # across conv1's pool


@pytest.mark.parametrize("args", [
    ("--layer", "conv5_3", "--channel", "1", "--direction", "out"),
    ("--layer", "conv5_1", "--channel", "512"),
    ("--layer", "conv5_1", "--channel", "1", "--by", "contribution", "--depth", "2"),
    ("--layer", "conv5_1", "--channel", "1", "--depth", "3"),
    ("--layer", "conv5_1", "--channel", "1", "--top", "x"),
    ("--layer", "conv5_1"),
])
def test_circuit_bad_arguments_are_one_line(args):
    p = cli("circuit", *args, "--weights", "oxford")
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
