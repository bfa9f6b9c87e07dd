"""The fidelity guard (issue 15): every int8 compile measures its outputs against the float model, warns below
15 dB naming the output and the layer where the error jumps, fails with exit 1 and no file under --min-sqnr, and
`mcc validate --reference` gives the same per-layer view of a compiled file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.compiler import compile_model, split_held_out
from mcc.ir import Graph
from mcc.passes.calibrate import sqnr_db
from mcc.runtime.litert import run_litert

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Offset(nn.Module):
    """A conv whose bias carries +1000 and a subtraction of 1000 after it: the int8 tensor between them spans
    about 1000 with a step near 4, so the signal (a few units) is lost wherever the quantization parameters of
    shared-parameter ops come from; fold_constants cannot cancel the two constants across the conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)
        with torch.no_grad():
            self.conv.bias += 1000.0

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x) - 1000.0), 1))


class Healthy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


def _export(module, path: Path) -> Path:
    torch.manual_seed(0)
    torch.export.save(torch.export.export(module.eval(), (torch.randn(1, 3, 8, 8),)), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard")
    torch.manual_seed(0)
    offset, healthy = Offset(), Healthy()
    calib = folder / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32))
    return {"offset": _export(offset, folder / "offset.pt2"), "healthy": _export(healthy, folder / "healthy.pt2"),
            "offset_module": offset, "calib": calib}


@pytest.mark.parametrize("target", ["arm-int8", "x86-int8"])
def test_collapsing_model_warns_naming_output_and_layer(files, tmp_path, capsys, target):
    out, report = tmp_path / f"offset{'.tflite' if target == 'arm-int8' else '.onnx'}", tmp_path / "r.json"
    assert main(["compile", str(files["offset"]), "--target", target, "--calib", str(files["calib"]),
                 "-o", str(out), "--report", str(report)]) == 0
    printed = capsys.readouterr()
    warning = next(line for line in printed.err.splitlines() if line.startswith("mcc: warning: int8 output"))
    assert "output 'fc'" in warning and "below 15 dB" in warning and "jumps first at 'sub" in warning
    assert "output 'fc': SQNR" in printed.out and "top-1 agreement" in printed.out
    guard = json.loads(report.read_text())["fidelity"]
    assert guard["outputs"]["fc"]["sqnr_db"] < 15 and guard["data"] == "calibration samples"
    # the jump is the subtraction: the tensor before it holds the offset well, the one after it holds noise
    layers = {la["tensor"]: la for la in guard["layers"]}
    jump = layers[guard["jumps"][0]]
    assert jump["op"] == "sub" and jump["drop_db"] > 30 and layers["conv"]["sqnr_db"] > 30
    # the figure is the file's: recompute the output SQNR with the real runtime on the same samples (arm-int8)
    if target == "arm-int8":
        x = np.load(files["calib"])["x"]
        with torch.no_grad():
            want = files["offset_module"](torch.from_numpy(x)).numpy().astype(np.float64)
        got = np.concatenate([run_litert(out.read_bytes(), {"x": s[None].transpose(0, 2, 3, 1)}, "ref")["fc"]
                              for s in x]).astype(np.float64)
        measured = sqnr_db(float(np.sum(want ** 2)), float(np.sum((want - got) ** 2)))
        assert abs(measured - guard["outputs"]["fc"]["sqnr_db"]) < 0.05


def test_min_sqnr_fails_with_exit_1_and_no_file(files, tmp_path, capsys):
    out, report = tmp_path / "offset.tflite", tmp_path / "r.json"
    code = main(["compile", str(files["offset"]), "--target", "arm-int8", "--calib", str(files["calib"]),
                 "-o", str(out), "--report", str(report), "--min-sqnr", "20"])
    err = capsys.readouterr().err
    assert code == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file either
    assert "below --min-sqnr 20 dB" in err and "output 'fc'" in err and "'sub'" in err and "No model written" in err
    assert json.loads(report.read_text())["fidelity"]["min_sqnr_db"] == 20


@pytest.mark.parametrize("target", ["arm-int8", "x86-int8"])
def test_healthy_model_reports_sqnr_and_top1_without_warning(files, tmp_path, capsys, target):
    out, report = tmp_path / f"healthy{'.tflite' if target == 'arm-int8' else '.onnx'}", tmp_path / "r.json"
    assert main(["compile", str(files["healthy"]), "--target", target, "--calib", str(files["calib"]),
                 "-o", str(out), "--min-sqnr", "20", "--report", str(report)]) == 0
    printed = capsys.readouterr()
    assert "warning" not in printed.err and out.exists()
    # every layer matched, none jumps: in x86-int8 the flatten before fc orders its elements as NCHW does, and the
    # float graph compared with is moved to NCHW too
    guard = json.loads(report.read_text())["fidelity"]
    assert {"conv", "view", "fc"} <= {la["tensor"] for la in guard["layers"]}
    assert guard["jumps"] == [] and max(la["drop_db"] for la in guard["layers"]) < 6
    line = next(line for line in printed.out.splitlines() if line.strip().startswith("output 'fc': SQNR"))
    assert float(line.split("SQNR ")[1].split(" dB")[0]) > 20 and "top-1 agreement" in line
    assert "fidelity guard" in printed.err  # progress names the step


def test_guard_with_int8_interface(files):
    result = compile_model(files["healthy"], "arm-int8", calib=str(files["calib"]), options={"io": "int8"})
    assert result.graph.inputs[0].dtype == "int8"
    assert result.report["fidelity"]["outputs"]["fc"]["sqnr_db"] > 20 and not result.report["warnings"]


def test_min_sqnr_refused_on_float_target(files, tmp_path, capsys):
    assert main(["compile", str(files["healthy"]), "--target", "arm-fp32", "-o", str(tmp_path / "h.tflite"),
                 "--min-sqnr", "20"]) == 2
    assert "--min-sqnr applies to int8 targets" in capsys.readouterr().err


def test_held_out_split_interleaves_whole_batches():
    g = Graph("g")
    g.add_input("x", (2, 4), "float32")
    arrays = {"x": np.arange(135, dtype=np.float32)[:, None].repeat(4, 1)}  # value = sample index
    calib, held = split_held_out(arrays, g)
    batches = held["x"][:, 0].astype(int) // 2
    assert len(held["x"]) == 32 and set(batches % 4) == {3}  # batches 3, 7, ..., 63 of 2 samples
    assert 134 in calib["x"][:, 0]  # a last sample that fills no batch stays with calibration
    assert sorted(np.concatenate([calib["x"][:, 0], held["x"][:, 0]])) == list(range(135))
    assert split_held_out({"x": arrays["x"][:127]}, g)[1] is None  # fewer than 128: measured in-sample
    assert split_held_out({"x": arrays["x"], "y": arrays["x"][:130]}, g)[1] is None  # left to calibration's error


def test_held_out_used_when_enough_samples(files, tmp_path):
    calib = {"x": np.random.default_rng(1).standard_normal((128, 3, 8, 8)).astype(np.float32)}
    result = compile_model(files["healthy"], "arm-int8", calib=calib)
    guard = result.report["fidelity"]
    assert guard["data"] == "held-out samples" and guard["samples"] == 32
    quant = next(p for p in result.report["passes"] if p["pass"] == "quantize_int8")
    assert quant["notes"]["calibration"]["samples"] == 96
    every = compile_model(files["healthy"], "arm-int8", calib=calib, hold_out=False)
    assert every.report["fidelity"]["samples"] == 128 and every.report["fidelity"]["data"] == "calibration samples"


@pytest.mark.slow
def test_validate_reference_prints_per_layer_view(capsys):
    code = main(["validate", str(EXAMPLES / "mobilenet_v2_style_int8.tflite"), "--input",
                 str(EXAMPLES / "mobilenet_v2_style_samples.npz"), "--reference",
                 str(EXAMPLES / "mobilenet_v2_style.pt2"), "--kernels", "ref"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fidelity of 'classifier.1'" in out and "top-1 agreement" in out
    table = out.split("per-layer SQNR against the float graph mcc quantized")[1].splitlines()
    rows = {r.split()[0]: r.split() for r in table[2:] if r.startswith("  ") and len(r.split()) >= 5}
    assert {"x/int8", "features.0.0", "features.3.add", "classifier.1"} <= set(rows)
    assert rows["features.0.0"][1] == "conv2d" and 25 < float(rows["features.0.0"][2]) < 60
    assert "<-" not in out and "warning" not in out  # a healthy model: no jump, no warning


@pytest.mark.slow
def test_headline_job_is_ci_job_and_prints_what_readme_quotes(tmp_path, capsys, monkeypatch):
    root = EXAMPLES.parent
    readme = (root / "README.md").read_text()
    setup = next(line for line in readme.splitlines() if line.strip().startswith("scripts/setup-dev"))
    command = setup.split("&& mcc ")[1].split()
    ci_lines = (root / ".ci/run").read_text().splitlines()
    assert "scripts/setup-dev" in ci_lines  # the same set-up
    ci = next(line for line in ci_lines if line.startswith("mcc compile"))
    assert ci.replace('"$out/', "").replace('"', "").split() == ["mcc", *command]
    assert command[:2] == ["compile", "examples/mobilenet_v2_style.pt2"] and "arm-int8" in command
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    assert main(command) == 0
    printed = capsys.readouterr().out
    quoted = readme.split("fidelity guard's figures")[1].split("`")[1]
    assert quoted.startswith("output 'classifier.1': SQNR") and quoted in printed
    assert (tmp_path / "mobilenet_v2_int8.tflite").exists() and (tmp_path / "report.json").exists()


# ---- the guard's cost (issue 16): shared constants, int8 and float graphs in chunks of their own sizes -----------
def test_read_back_constants_share_identical_arrays_only(files):
    from mcc.compiler import share_constants
    from mcc.validate import read_model_bytes

    result = compile_model(files["healthy"], "arm-int8", calib=str(files["calib"]))
    read = read_model_bytes(result.data, "tflite", None)
    arrays = {id(t.data) for t in result.graph.constants()}
    assert share_constants(read, result.graph) == len(read.constants()) > 3
    assert all(id(t.data) in arrays for t in read.constants())
    # a constant that differs in one byte, or in its quantization, keeps the file's own array
    changed = result.graph.copy()
    weights = [t for t in changed.constants() if t.dtype == "int8"]
    weights[0].data = weights[0].data.copy()
    weights[0].data.flat[0] ^= 1
    weights[1].quant = type(weights[1].quant)(weights[1].quant.scale * 2, weights[1].quant.zero_point,
                                              weights[1].quant.axis)
    read = read_model_bytes(result.data, "tflite", None)
    assert share_constants(read, changed) == len(read.constants()) - 2
    kept = {t.name: t for t in read.constants()}
    assert kept[weights[0].name].data.flat[0] != weights[0].data.flat[0]
    assert kept[weights[1].name].data is not weights[1].data


def test_layer_view_does_not_depend_on_chunk_sizes(files, monkeypatch):
    """The int8 graph runs in larger chunks than the float one; each float run must be measured against its own
    samples of the int8 chunk: the figures agree with both graphs run sample by sample, and in one chunk."""
    from mcc.compiler import load_model, lower
    from mcc.passes import calibrate
    from mcc.validate import layer_fidelity

    source = load_model(files["healthy"])
    arrays = {"x": np.random.default_rng(2).standard_normal((24, 3, 8, 8)).astype(np.float32)}
    graph, _, reference = lower(source, "arm-int8", options={"calibration": arrays}, keep_float=True)
    per_sample = sum(t.nbytes for t in calibrate.activations(reference, all_dtypes=True))
    views = {}
    for name, budget in (("one", 1), ("mixed", 7 * per_sample), ("all", 1 << 30)):
        monkeypatch.setattr(calibrate, "CHUNK_BYTES", budget)
        sizes = (calibrate.chunk_batches(reference), calibrate.chunk_batches(graph))
        views[name] = layer_fidelity(reference, graph, arrays, "litert-ref"), sizes
    assert views["one"][1] == (1, 1) and views["all"][1] == (calibrate.CHUNK_SAMPLES,) * 2
    floats, int8s = views["mixed"][1]  # float runs of 7, 7, 1 inside the first int8 chunk of 15, then 7, 2
    assert 1 < floats < int8s < 24 and int8s % floats
    for name in ("mixed", "all"):
        view = views[name][0]
        assert view["outputs"] == views["one"][0]["outputs"]
        assert [(la["tensor"], la["op"]) for la in view["layers"]] == [
            (la["tensor"], la["op"]) for la in views["one"][0]["layers"]]
        for la, lb in zip(view["layers"], views["one"][0]["layers"]):
            assert la["sqnr_db"] == pytest.approx(lb["sqnr_db"], abs=1e-9)


@pytest.mark.parametrize("floats, samples", [(3, 21), (1, 7)])
def test_guard_does_not_depend_on_the_worker_count(monkeypatch, floats, samples):
    """Int8 chunks with their float runs side by side on two workers give the per-layer view, to the last bit, and
    the guard's report entry of one worker's run: float runs of 3 samples in int8 chunks of 10 (3, 3, 3, 1 in each
    of 10, 10, 1), and float runs of 1 in int8 chunks of at most 3, which two workers take as 2, 2, 2, 1 (whole
    float chunks, so the float runs are the same) where one takes 3, 3, 1."""
    from mcc.compiler import emit, fidelity_guard, lower
    from mcc.examples.zoo import ZOO
    from mcc.frontend.torch_export import from_module
    from mcc.passes import calibrate
    from mcc.progress import Progress
    from mcc.validate import layer_fidelity

    model, example = ZOO["mobilenet_v2_style"]()
    source = from_module(model, (example,))
    rng = np.random.default_rng(6)
    shape = source.inputs[0].shape[1:]
    calib = {source.inputs[0].name: rng.standard_normal((8, *shape)).astype(np.float32)}
    held = {source.inputs[0].name: rng.standard_normal((samples, *shape)).astype(np.float32)}
    graph, _, reference = lower(source, "arm-int8", options={"calibration": calib}, keep_float=True)
    data = emit(graph, "arm-int8")
    per_sample = sum(t.nbytes for t in calibrate.activations(reference, True))
    monkeypatch.setattr(calibrate, "CHUNK_BYTES", floats * per_sample)
    assert calibrate.chunk_batches(reference) == floats
    assert calibrate.chunk_batches(graph) == (10 if floats == 3 else 3)
    views = [layer_fidelity(reference, graph, held, "litert-ref", workers=w) for w in (1, 2)]
    assert views[0] == views[1] and len(views[0]["layers"]) > 10
    entries = [fidelity_guard(reference, data, "arm-int8", {}, held, None, Progress(False), graph, workers=w)
               for w in (1, 2)]
    assert entries[0] == entries[1] and entries[0][0]["samples"] == samples
