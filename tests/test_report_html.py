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


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A float compile of the trained digits classifier with --prune and --low-rank, measured on a held-out
    labelled set (--eval-data), with --report and --html; and the source model's own test accuracy (torch)."""
    import torch

    from mcc.examples.zoo import ZOO, digits_split

    tmp = tmp_path_factory.mktemp("compressed")
    model, example = ZOO["digits_classifier"]()
    split = digits_split()
    torch.export.save(torch.export.export(model, (example,)), tmp / "digits.pt2")
    np.savez(tmp / "calib.npz", x=split.x_train[:128].numpy())
    np.savez(tmp / "val.npz", x=split.x_test.numpy(), labels=split.y_test.numpy())
    assert main(["compile", str(tmp / "digits.pt2"), "--target", "arm-fp32", "--calib", str(tmp / "calib.npz"),
                 "--prune", "0.3", "--low-rank", "0.7", "--eval-data", str(tmp / "val.npz"), "-o",
                 str(tmp / "net.tflite"), "--report", str(tmp / "net.json"), "--html", str(tmp / "net.html"),
                 "-q"]) == 0
    with torch.no_grad():
        source_accuracy = float((model(split.x_test).argmax(1) == split.y_test).double().mean())
    return tmp, json.loads((tmp / "net.json").read_text()), split, source_accuracy


def test_eval_data_measures_every_compression_pass_on_the_held_out_set(compressed):
    """--eval-data: the section says it measured on the held-out file; the first stage's "before" is the source
    model's own test accuracy (torch), and the last "after" the emitted file's test accuracy (LiteRT)."""
    from ai_edge_litert.interpreter import Interpreter

    tmp, report, split, source_accuracy = compressed
    section = report["compression"]
    n = len(split.y_test)
    assert section["order"] == ["prune", "low_rank"]
    assert section["data"] == f"{n} held-out samples of val.npz with labels"
    first, last = section["passes"]
    assert first["accuracy"]["before"] == pytest.approx(source_accuracy, abs=1.5 / n)
    assert first["accuracy"]["after"] == last["accuracy"]["before"]
    interp = Interpreter(model_path=str(tmp / "net.tflite"))
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    hits = 0
    for x, y in zip(split.x_test.numpy().transpose(0, 2, 3, 1), split.y_test.numpy()):
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        hits += int(interp.get_tensor(out["index"]).argmax() == y)
    assert last["accuracy"]["after"] == pytest.approx(hits / n, abs=1.5 / n)
    assert last["accuracy"]["after"] < source_accuracy  # the figures are this compile's, not a copy of the source's


def test_eval_data_is_checked_before_any_pass(compressed, capsys):
    tmp, _, split, _ = compressed
    np.savez(tmp / "bad_labels.npz", x=split.x_test[:8].numpy(), labels=np.full(8, 10))
    np.savez(tmp / "bad_shape.npz", x=split.x_test[:8, :, :4].numpy())
    for name, message in (("bad_labels.npz", "outside the model's 10 classes"),
                          ("bad_shape.npz", "the model expects [1, 1, 8, 8]")):
        assert main(["compile", str(tmp / "digits.pt2"), "--target", "arm-fp32", "--low-rank", "0.7", "--calib",
                     str(tmp / "calib.npz"), "--eval-data", str(tmp / name), "-o", str(tmp / "x.tflite"),
                     "-q"]) == 2
        err = capsys.readouterr().err
        assert name in err and message in err, err
    assert not (tmp / "x.tflite").exists()
    assert main(["compile", str(tmp / "digits.pt2"), "--target", "arm-fp32", "--eval-data", str(tmp / "val.npz"),
                 "-o", str(tmp / "x.tflite"), "-q"]) == 0
    assert "was not used: no compression pass changed the model" in capsys.readouterr().err


def test_chromium_renders_the_compression_section(compressed):
    """Every figure of the compression report as before / after bars per pass, the pruned groups, and each pass's
    per-layer table and bars (forms and ranks of the low-rank split, channels of the pruned layers)."""
    tmp, report, _, _ = compressed
    section = report["compression"]
    dom = _chromium("--dump-dom", "net.html", cwd=tmp)
    svgs = dict(re.findall(r'<svg class="plot" data-metric="(\w+)"[^>]*>(.*?)</svg>', dom, re.S))
    figures = ["params", "macs", "bytes", "latency_ms", "sqnr_db", "accuracy"]
    assert [m for m in svgs if m.startswith("compression_")] == [f"compression_{f}" for f in figures]
    for f in figures:  # prune, low_rank, total: a before and an after bar each (the source's SQNR is finite)
        rects = re.findall(r'<rect [^>]*width="([\d.]+)"[^>]*><title>([^<]*)</title>', svgs[f"compression_{f}"])
        assert len(rects) == 6 and min(float(w) for w, _ in rects) > 0, f
        after = section["total"][f]["after"]
        assert any(t in (f"total after: {after:,}", f"total after: {after:,.4g}") for _, t in rects), rects
    for name in ("prune_layers_macs", "prune_layers_params", "low_rank_layers_macs"):
        assert len(re.findall(r"<rect", svgs[name])) == 2 * 3, name  # three layers, before and after
    low_rank = section["passes"][1]
    for la in low_rank["layers"]:
        rank = "x".join(map(str, la.get("rank", [])))
        assert re.search(rf"<td>{re.escape(la['name'])}</td><td>{la['form']}</td><td[^>]*>{rank}</td>", dom), la
    for g in report["pruning"]["groups"]:
        assert re.search(rf"<td>{re.escape(g['group'])}</td><td class=\"n\">{g['channels']}</td>"
                         rf"<td class=\"n\">{g['kept']}</td>", dom)
    acc = section["total"]["accuracy"]
    assert f"{acc['before'] * 100:.2f}% -&gt; {acc['after'] * 100:.2f}%" in dom
    assert "held-out samples of val.npz with labels" in dom


def test_a_report_without_compression_says_so(compiled):
    _, report = compiled
    assert "No compression pass in this report" in render_html(report)
