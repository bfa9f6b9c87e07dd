"""The HTML compile report (issue 20, item 7): `mcc compile --html` and `mcc report` write one self-contained page
(no script, no network) whose SVG plots headless Chromium renders: its DOM holds every plot with non-zero bars, and
a screenshot shows the bar colours in the plot areas. Chromium is Debian's `chromium` package
(`apt-get install -y chromium`, which .ci/run's set-up does)."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mcc.cli import main
from mcc.report_html import AFTER, SQNR_COLOR, render_html

EXAMPLE = "examples/mobilenet_v2_style.pt2"


def _chromium(*args, cwd):
    exe = shutil.which("chromium")
    assert exe, "headless Chromium is needed: apt-get install -y chromium"
    done = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          cwd=cwd, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """An arm-int8 compile with --report and --html, plus a report extended with a validation result and a memory
    check as a build adds them."""
    from pathlib import Path

    import mcc

    tmp = tmp_path_factory.mktemp("html")
    root = Path(mcc.__file__).parent
    np.savez(tmp / "calib.npz", x=np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))
    assert main(["compile", str(root / EXAMPLE), "--target", "arm-int8", "--calib", str(tmp / "calib.npz"), "-o",
                 str(tmp / "net.tflite"), "--report", str(tmp / "net.json"), "--html", str(tmp / "net.html"),
                 "-q"]) == 0
    report = json.loads((tmp / "net.json").read_text())
    return tmp, report


def test_compile_html_is_the_report_rendered_and_deterministic(compiled, capsys):
    tmp, report = compiled
    page = (tmp / "net.html").read_text()
    assert page == render_html(report) == render_html(json.loads(json.dumps(report)))
    assert main(["report", str(tmp / "net.json"), "-o", str(tmp / "again.html")]) == 0
    assert (tmp / "again.html").read_text() == page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<link" not in page and "@import" not in page
    for layer in report["layers"]:
        assert f"<td>{layer['name']}</td>" in page
    out = report["fidelity"]["outputs"]["classifier.1"]
    assert f"{out['sqnr_db']:.2f} dB" in page
    assert "No validation result in this report" in page and "No device memory check in this report" in page


@pytest.mark.slow
def test_chromium_renders_every_plot(compiled):
    tmp, report = compiled
    report = dict(report)
    report["validation"] = {"ok": True, "samples": 16, "inputs": "calib.npz",
                            "comparisons": [{"kernels": "ref", "rules": "litert-ref", "exact": True,
                                             "elements": 1323248, "differing": 0, "max_abs_diff": 0.0,
                                             "first_differing_op": None}]}
    report["memory"] = {"device": "cortex-m7 example", "arena_bytes": 40960, "ram_bytes": 524288, "fits": True}
    (tmp / "full.html").write_text(render_html(report))
    dom = _chromium("--dump-dom", "full.html", cwd=tmp)
    svgs = re.findall(r'<svg class="plot" data-metric="(\w+)"[^>]*>(.*?)</svg>', dom, re.S)
    assert [m for m, _ in svgs] == ["params", "macs", "bytes", "bytes", "macs", "sqnr_db"]
    for metric, body in svgs:
        widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)" height="[\d.]+"', body)]
        heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', body)]
        assert widths and min(widths) > 0 and min(heights) > 0, metric
    n_passes = len(report["passes"])
    assert len(re.findall(r"<rect", svgs[0][1])) == 2 * n_passes
    assert len(re.findall(r"<rect", svgs[5][1])) == len(report["fidelity"]["layers"])
    assert "cortex-m7 example" in dom and '<span class="ok">exact</span>' in dom and "1,323,248" in dom
    # the rendered pixels: the bars' colours are there, in quantity, and not elsewhere on a blank page
    _chromium("--window-size=1300,4000", "--screenshot=shot.png", "full.html", cwd=tmp)
    pixels = np.asarray(Image.open(tmp / "shot.png").convert("RGB")).reshape(-1, 3)
    for color, least in ((AFTER, 3 * n_passes * 100), (SQNR_COLOR, 500)):
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        count = int((np.abs(pixels.astype(int) - rgb).max(axis=1) <= 8).sum())
        assert count >= least, f"{color}: {count} pixels"
    assert len(np.unique(pixels, axis=0)) > 20  # not a uniform (blank) screenshot


def test_report_refuses_what_is_not_a_report(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{not json")
    assert main(["report", str(tmp_path / "x.json")]) == 2
    assert "is not a JSON compile report" in capsys.readouterr().err
    (tmp_path / "y.json").write_text('{"ok": true}')
    assert main(["report", str(tmp_path / "y.json")]) == 2
    assert "is not a compile report (no target, source, output, passes, layers)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "no such report file" in capsys.readouterr().err


def test_float_report_without_fidelity_renders(tmp_path):
    from pathlib import Path

    import mcc
    from mcc.compiler import compile_model

    compile_model(Path(mcc.__file__).parent / EXAMPLE, "arm-fp32", html_path=tmp_path / "f.html")
    page = (tmp_path / "f.html").read_text()
    assert "No fidelity guard in this report" in page
    dom = _chromium("--dump-dom", "f.html", cwd=tmp_path)
    assert re.findall(r'<svg class="plot" data-metric="(\w+)"', dom) == ["params", "macs", "bytes", "bytes", "macs"]
