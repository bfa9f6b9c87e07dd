"""Issue 18's done-when and composability, measured with real accuracy: a ResNet-style net trained on digits
(examples/zoo.py digits_resnet) split by low_rank at 0.5 of its MACs, and with every 3x3 conv after the stem made
depthwise-separable, each fine-tuned by distillation (and labels) from the unsplit model, then quantized to int8:
the MACs measured on the graph, the test accuracy of the emitted int8 file (mcc's runtime, which validates
bit-exact against LiteRT), and the compile report's "compression" section (compiler.compression_report) that
measures every rewrite. Composability: prune, low_rank and finetune in one compile, in targets.COMPRESS order, to
int8 TFLite and ONNX, bit-exact in LiteRT and onnxruntime."""

import json

import numpy as np
import pytest
import torch

from mcc.cli import main
from mcc.compiler import compile_model
from mcc.examples.zoo import ZOO, digits_resnet, digits_split, digits_upsampled_split
from mcc.frontend.torch_export import from_module
from mcc.runtime.interpreter import run
from mcc.targets import COMPRESS
from mcc.validate import read_compiled, validate



def accuracy(path, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of a compiled file, read back and run by mcc's runtime one sample at a time."""
    _, fmt, graph = read_compiled(path)
    x = x_test.transpose(0, 2, 3, 1) if fmt == "tflite" else x_test
    name = graph.inputs[0].name
    predictions = [next(iter(run(graph, {name: x[i:i + 1]}).values())).argmax() for i in range(len(x))]
    return float((np.array(predictions) == y_test).mean())


def bit_exact(path, inputs) -> None:
    comparisons = validate(path, inputs)["comparisons"]
    assert comparisons and all(c["differing"] == 0 for c in comparisons), comparisons


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """The trained digits ResNet, its data files, and the unsplit int8 model's test accuracy."""
    tmp = tmp_path_factory.mktemp("compress")
    model, example = digits_resnet()
    split = digits_upsampled_split()
    source = from_module(model, (example,))
    np.savez(tmp / "train.npz", x=split.x_train.numpy(), labels=split.y_train.numpy())
    np.savez(tmp / "test.npz", x=split.x_test[:48].numpy())
    calib = {"x": split.x_train[:256].numpy()}
    test = (split.x_test.numpy(), split.y_test.numpy())
    compile_model(source.copy(), "arm-int8", tmp / "base.tflite", calib=calib)
    return tmp, source, calib, test, accuracy(tmp / "base.tflite", *test)


@pytest.mark.slow  # a trained ResNet, a low-rank search and fine-tuning: minutes on a shared CPU
@pytest.mark.parametrize("split_options, pass_name, mac_ratio", [
    ({"low_rank": 0.5}, "low_rank", 0.55),
    ({"depthwise": ("blocks.*.body.*",)}, "depthwise_separable", 0.35),  # every 3x3 conv but the stem
])
def test_split_and_finetuned_int8_stays_within_1_5_points(resnet, split_options, pass_name, mac_ratio, capsys):
    tmp, source, calib, test, base = resnet
    out = tmp / f"{pass_name}.tflite"
    result = compile_model(source.copy(), "arm-int8", out, calib=calib, options=split_options,
                           finetune=tmp / "train.npz")
    macs = result.report["source"]["totals"]["macs"], result.report["output"]["totals"]["macs"]
    got = accuracy(out, *test)
    print(f"\n{pass_name}: MACs {macs[0]:,} -> {macs[1]:,} (x{macs[1] / macs[0]:.3f}); int8 test accuracy "
          f"unsplit {base:.4f}, split and fine-tuned {got:.4f}")
    assert macs[1] <= mac_ratio * macs[0]
    assert got >= base - 0.015, (got, base)
    bit_exact(out, tmp / "test.npz")

    # every rewrite measured: the split pass and the fine-tuning, in pipeline order, before and after
    section = result.report["compression"]
    assert section["order"] == [pass_name, "finetune"]
    split_entry, tuned = section["passes"]
    assert split_entry["macs"]["after"] < split_entry["macs"]["before"]
    assert split_entry["bytes"]["after"] < split_entry["bytes"]["before"]
    assert tuned["bytes"]["after"] == len(result.data) == section["total"]["bytes"]["after"]
    assert split_entry["bytes"]["after"] == tuned["bytes"]["before"]  # the same file: stages chain
    for entry in (split_entry, tuned, section["total"]):
        assert {"params", "macs", "bytes", "latency_ms", "sqnr_db", "accuracy"} <= set(entry)
        assert entry["latency_ms"]["before"] > 0 and entry["latency_ms"]["after"] > 0
    before, after = split_entry["sqnr_db"]["before"], split_entry["sqnr_db"]["after"]
    assert after is not None and (before is None or before > after)  # the split costs float fidelity
    assert tuned["accuracy"]["after"] > tuned["accuracy"]["before"]  # distillation won back (training) accuracy
    layers = {la["name"]: la for la in split_entry["layers"]}
    assert "stem.0" not in layers or layers["stem.0"]["form"] == "kept"
    assert any(la["macs_after"] < la["macs_before"] for la in layers.values())


@pytest.mark.slow
def test_prune_low_rank_and_finetune_compose_in_one_compile_bit_exact(tmp_path, capsys):
    """--prune 0.3 --low-rank 0.7 --finetune in one compile: the passes run in targets.COMPRESS order (prune
    first: the splits are searched on the channels that remain; fine-tuning last: it trains what the structural
    passes left), every one is measured, and the int8 files validate bit-exact in LiteRT and onnxruntime."""
    model, example = ZOO["digits_classifier"]()
    split = digits_split()
    source = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (example,)), source)
    np.savez(tmp_path / "calib.npz", x=split.x_train[:256].numpy())
    np.savez(tmp_path / "train.npz", x=split.x_train[:512].numpy(), labels=split.y_train[:512].numpy())
    np.savez(tmp_path / "test.npz", x=split.x_test[:48].numpy())
    for target, suffix in (("arm-int8", ".tflite"), ("x86-int8", ".onnx")):
        out, report = tmp_path / f"c{suffix}", tmp_path / f"{target}.json"
        assert main(["compile", str(source), "--target", target, "--calib", str(tmp_path / "calib.npz"),
                     "--prune", "0.3", "--low-rank", "0.7", "--finetune", str(tmp_path / "train.npz"),
                     "--epochs", "2", "-o", str(out), "--report", str(report)]) == 0
        printed = capsys.readouterr().out
        r = json.loads(report.read_text())
        ran = [p["pass"] for p in r["passes"] if p["pass"] in COMPRESS]
        assert ran == list(COMPRESS) == ["prune", "depthwise_separable", "low_rank", "finetune"]
        section = r["compression"]
        assert section["order"] == ["prune", "low_rank", "finetune"]
        prune, low_rank, _ = section["passes"]
        assert prune["macs"]["after"] < prune["macs"]["before"] == r["source"]["totals"]["macs"]
        assert low_rank["macs"]["before"] == prune["macs"]["after"] > low_rank["macs"]["after"]
        assert r["pruning"]["bytes"] == prune["bytes"] and r["pruning"]["groups"]
        for line in ("pruned (l1, uniform 0.3)", "low_rank: MACs", "finetune: MACs",
                     "compression total (prune -> low_rank -> finetune)"):
            assert line in printed, printed
        bit_exact(out, tmp_path / "test.npz")
        print(f"\n{target}: {section['total']}")


def test_a_float_compile_measures_its_rewrite_without_labels(tmp_path, capsys):
    """Without --finetune there are no labels: the section has SQNR but no accuracy; a compile without any
    compression flag has no section at all."""
    model, example = ZOO["digits_classifier"](train=False)
    graph = from_module(model, (example,))
    calib = {"x": digits_split().x_train[:64].numpy()}
    plain = compile_model(graph.copy(), "arm-fp32", calib=calib)
    assert "compression" not in plain.report
    r = compile_model(graph.copy(), "arm-fp32", calib=calib, options={"depthwise": ("*",)})
    section = r.report["compression"]
    assert section["order"] == ["depthwise_separable"] and section["data"] == "64 calibration samples"
    (entry,) = section["passes"]
    assert entry["bytes"] == {"before": len(plain.data), "after": len(r.data)}
    assert "accuracy" not in entry and entry["sqnr_db"]["after"] < (entry["sqnr_db"]["before"] or float("inf"))
    replaced = [la for la in entry["layers"] if la["form"] == "depthwise_separable"]
    assert replaced and entry["macs"]["after"] == entry["macs"]["before"] - sum(
        la["macs_before"] - la["macs_after"] for la in replaced)
