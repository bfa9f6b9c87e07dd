"""Files that fit the ecosystem's tools (issue 20, item 3): every emitted .tflite has a "serving_default" signature
that LiteRT's signature runner and ai-edge-quantizer's calibration use; TFLite Metadata (normalization, label file)
as the TFLite Support library lays it out, read back with a reader written from metadata_schema.fbs; ONNX model
metadata through onnx.checker and onnxruntime's get_modelmeta()."""

import io
import json
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

import mcc
from mcc import __version__
from mcc.cli import main
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.examples.zoo import ZOO
from mcc.formats.tflite.metadata import TENSOR_AXIS_LABELS, read_metadata
from mcc.formats.tflite.reader import read_tflite
from mcc.formats.tflite.writer import write_tflite
from mcc.frontend.torch_export import from_module
from mcc.runtime.litert import run_litert

TFLITE_TARGETS = ("arm-fp32", "arm-int8")
EXAMPLE = Path(mcc.__file__).parent / "examples" / "mobilenet_v2_style.pt2"


def _calib(example, n=8, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((n, *example.shape[1:])).astype(np.float32)}


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo_files(request):
    """{target: bytes} of one zoo model, both TFLite targets, and a random NHWC input."""
    name = request.param
    model, example = ZOO[name](**({"train": False} if name == "digits_classifier" else {}))
    graph = from_module(model, (example,))
    files = {t: compile_model(graph, t, calib=_calib(example) if "int8" in t else None).data for t in TFLITE_TARGETS}
    return name, graph, files, _nhwc(_calib(example, 1, seed=1)["x"])


@pytest.fixture(scope="module")
def mnv2():
    """MobileNetV2-style's IR graph (compile_model copies it before each pass) and example input."""
    model, example = ZOO["mobilenet_v2_style"]()
    return from_module(model, (example,)), example


@pytest.fixture(scope="module")
def fp32_file(mnv2):
    return compile_model(mnv2[0], "arm-fp32").data


def _model(data: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))


def _pack(m: schema.ModelT) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.mark.slow
def test_signature_runner_equals_invoke_on_every_zoo_file(zoo_files):
    name, graph, files, x = zoo_files
    for target, data in files.items():
        interp = Interpreter(model_content=data)
        sig = interp.get_signature_list()
        assert sig == {"serving_default": {"inputs": [t.name for t in graph.inputs],
                                           "outputs": [t.name for t in graph.outputs]}}, (name, target, sig)
        got = {k: v.copy() for k, v in interp.get_signature_runner("serving_default")(**{"x": x}).items()}
        want = run_litert(data, {"x": x}, "default")
        assert set(got) == set(want) and got, (name, target, set(got), set(want))
        for k in want:
            assert np.array_equal(got[k], want[k]), f"{name} {target} output {k}: signature runner != invoke"


def test_signature_names_from_a_tflite_source_and_without_suffixes(fp32_file):
    """A TFLite source's own signature names survive a compile; ':0' style tensor names lose the suffix."""
    m = _model(fp32_file)
    sub = m.subgraphs[0]
    sub.tensors[sub.inputs[0]].name = b"serving_default_images:0"  # as the TF converter names them
    sub.tensors[sub.outputs[0]].name = b"StatefulPartitionedCall:0"
    m.signatureDefs[0].inputs[0].name = b"images"
    m.signatureDefs[0].outputs[0].name = b"logits"
    graph = read_tflite(_pack(m))
    assert graph.origin["signature"] == {"serving_default_images:0": "images", "StatefulPartitionedCall:0": "logits"}
    again = Interpreter(model_content=write_tflite(graph)).get_signature_list()
    assert again == {"serving_default": {"inputs": ["images"], "outputs": ["logits"]}}
    del graph.origin["signature"]  # no recorded names: the tensor names without their ':0'
    plain = Interpreter(model_content=write_tflite(graph)).get_signature_list()
    assert plain == {"serving_default": {"inputs": ["serving_default_images"], "outputs": ["StatefulPartitionedCall"]}}


def test_reader_refuses_a_signature_that_names_a_missing_tensor(fp32_file):
    m = _model(fp32_file)
    m.signatureDefs[0].outputs[0].tensorIndex = 10_000
    with pytest.raises(MccError, match="signature 'serving_default' maps a name to tensor 10000"):
        read_tflite(_pack(m))


@pytest.mark.slow
def test_ai_edge_quantizer_calibrates_an_mcc_file(mnv2, fp32_file):
    """Google's ai-edge-quantizer addresses a model by signature; it failed on mcc's files before with
    'Invalid signature_key provided: "serving_default"'."""
    from ai_edge_quantizer import quantizer, recipe

    data, example = fp32_file, mnv2[1]
    qt = quantizer.Quantizer(bytearray(data), recipe.static_wi8_ai8())
    samples = _nhwc(_calib(example, 8)["x"])
    calibration = qt.calibrate({"serving_default": [{"x": s[None]} for s in samples]}, num_threads=1)
    graph = read_tflite(data)
    computed = {t.name for n in graph.nodes for t in n.outputs} | {"x"}
    assert computed <= set(calibration), sorted(computed - set(calibration))
    assert all(np.all(np.asarray(calibration[k]["min"]) <= np.asarray(calibration[k]["max"])) for k in computed)
    quantized = bytes(qt.quantize(calibration, enable_progress_report=False).quantized_model)
    interp = Interpreter(model_content=quantized)
    assert interp.get_signature_list()["serving_default"]["outputs"] == ["classifier.1"]
    x_in = interp.get_signature_runner("serving_default").get_input_details()["x"]
    assert x_in["dtype"] == np.int8  # it did quantize the file mcc wrote


# ---- TFLite Metadata and ONNX metadata ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def with_metadata(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meta")
    labels = [f"class {i}" for i in range(9)] + ["ünïcode"]
    (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    model, example = ZOO["mobilenet_v2_style"]()
    torch.export.save(torch.export.export(model, (example,)), tmp / "net.pt2")
    np.savez(tmp / "calib.npz", **_calib(example))
    return tmp, labels


@pytest.mark.parametrize("target", ["arm-fp32", pytest.param("arm-int8", marks=pytest.mark.slow)])
def test_tflite_metadata_as_the_support_library_lays_it_out(with_metadata, target):
    tmp, labels = with_metadata
    out = tmp / f"net.{target}.tflite"
    args = ["compile", str(tmp / "net.pt2"), "--target", target, "-o", str(out), "-q", "--labels",
            str(tmp / "labels.txt"), "--norm-mean", "127.5,120,110", "--norm-std", "64", "--report",
            str(tmp / f"{target}.json")]
    assert main(args + (["--calib", str(tmp / "calib.npz")] if "int8" in target else [])) == 0
    data = out.read_bytes()
    m = _model(data)
    assert [e.name for e in m.metadata] == [b"TFLITE_METADATA"]
    meta = read_metadata(bytes(m.buffers[m.metadata[0].buffer].data))
    assert meta["min_parser_version"] == "1.0.0" and len(meta["subgraphs"]) == 1
    (x,), (y,) = meta["subgraphs"][0]["inputs"], meta["subgraphs"][0]["outputs"]
    assert x["name"] == "x" and x["content"] == "ImageProperties" and x["color_space"] == "RGB"
    assert x["normalization"] == {"mean": [127.5, 120.0, 110.0], "std": [64.0] * 3}  # same lengths: Task Library
    assert y["name"] == "classifier.1" and y["associated_files"] == [{"name": "labels.txt", "type": TENSOR_AXIS_LABELS}]
    packed = zipfile.ZipFile(io.BytesIO(data))
    assert packed.namelist() == ["labels.txt"]
    assert packed.read("labels.txt").decode("utf-8").splitlines() == labels
    report = json.loads((tmp / f"{target}.json").read_text())
    assert report["metadata"]["labels"] == {"output": "classifier.1", "file": "labels.txt", "count": 10}
    # the model still loads and runs, by signature too
    feed = _nhwc(_calib(ZOO["mobilenet_v2_style"]()[1], 1)["x"])
    got = Interpreter(model_content=data).get_signature_runner("serving_default")(x=feed)["classifier.1"]
    assert np.array_equal(got, run_litert(data, {"x": feed}, "default")["classifier.1"])
    assert read_tflite(data).outputs[0].name == "classifier.1"
    # deterministic bytes, metadata and zip included
    again = tmp / f"again.{target}.tflite"
    assert main([*args[:5], str(again), *args[6:]] + (["--calib", str(tmp / "calib.npz")] if "int8" in target
                                                      else [])) == 0
    assert again.read_bytes() == data


@pytest.mark.parametrize("target", ["x86-fp32", pytest.param("x86-int8", marks=pytest.mark.slow)])
def test_onnx_model_metadata(with_metadata, target):
    tmp, labels = with_metadata
    example = ZOO["mobilenet_v2_style"]()[1]
    result = compile_model(tmp / "net.pt2", target, calib=_calib(example) if "int8" in target else None,
                           metadata={"normalization": {"mean": [0.5], "std": [0.25, 0.5, 1.0]},
                                     "labels": tmp / "labels.txt"})
    model = onnx.load_from_string(result.data)
    onnx.checker.check_model(model, full_check=True)
    meta = ort.InferenceSession(result.data, providers=["CPUExecutionProvider"]).get_modelmeta()
    assert meta.producer_name == "mcc" and model.producer_version == __version__
    assert f"mcc {__version__}" in meta.description and "classifier.1 float32[1, 10]" in meta.description
    props = meta.custom_metadata_map
    assert json.loads(props["mcc.normalization"]) == {"input": "x", "mean": [0.5] * 3, "std": [0.25, 0.5, 1.0],
                                                      "channel_axis": 1, "formula": "(x - mean) / std"}
    assert props["mcc.labels_output"] == "classifier.1" and props["mcc.labels"].splitlines() == labels
    assert ("mcc.table_rules" in props) == ("int8" in target)


def test_onnx_without_metadata_still_names_its_producer(mnv2):
    data = compile_model(mnv2[0], "x86-fp32").data
    meta = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).get_modelmeta()
    assert meta.producer_name == "mcc" and meta.custom_metadata_map == {}
    assert meta.description.startswith("'MobileNetV2Style' written by mcc")


@pytest.mark.parametrize("metadata, message", [
    ({"labels": "missing.txt"}, "no such label file"),
    ({"normalization": {"mean": [1, 2], "std": [1]}}, "'mean' has 2 values and input 'x' .* has 3 channels"),
    ({"normalization": {"mean": [0], "std": [0]}}, "'std' holds 0"),
    ({"normalization": {"mean": "a", "std": [1]}}, "normalization 'mean' is 'a'"),
    ({"normalization": {"mean": [0]}}, "give {'mean': \\[...\\], 'std': \\[...\\]}"),
    ({"colour": 1}, "'colour' are not ones mcc embeds"),
])
def test_bad_metadata_is_refused_before_any_work(metadata, message, mnv2):
    with pytest.raises(MccError, match=message):
        compile_model(mnv2[0], "arm-fp32", metadata=metadata)


def test_label_count_must_match_the_classes(tmp_path, mnv2, capsys):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(MccError, match="label file has 2 lines and output 'classifier.1' \\[1, 10\\] has 10 classes"):
        compile_model(mnv2[0], "arm-fp32", metadata={"labels": tmp_path / "labels.txt"})
    assert main(["compile", str(EXAMPLE), "--target", "arm-fp32", "--norm-mean", "1"]) == 2
    assert "--norm-mean and --norm-std describe (x - mean) / std together" in capsys.readouterr().err


# tflite-support 0.4.4 (the last release, cp311 wheel) needs protobuf < 4, which onnx cannot import beside: it is
# installed apart (pip install --no-deps --target DIR tflite-support==0.4.4 protobuf==3.20.3) and run in a
# subprocess with DIR on its path: .deps/tflite-support (scripts/setup-dev puts it there) or TFLITE_SUPPORT_PATH.
_TASK_LIBRARY = """
import json, sys
import numpy as np
from tflite_support import metadata
from tflite_support.task import core, processor, vision
out = {}
for path in sys.argv[1:]:
    shown = metadata.MetadataDisplayer.with_model_file(path)
    options = vision.ImageClassifierOptions(base_options=core.BaseOptions(file_name=path),
                                            classification_options=processor.ClassificationOptions(max_results=10, score_threshold=-1e9))
    image = np.load(path + ".npy")
    result = vision.ImageClassifier.create_from_options(options).classify(vision.TensorImage.create_from_array(image))
    out[path] = {"files": shown.get_packed_associated_file_list(), "metadata": json.loads(shown.get_metadata_json()),
                 "scores": {c.category_name: c.score for c in result.classifications[0].categories}}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_tflite_support_task_library_reads_the_metadata(with_metadata, mnv2):
    """TFLite Support's own reader and its Task Library ImageClassifier, given a uint8 image, apply the embedded
    normalization and name the classes from the packed labels: its scores are LiteRT's on the image normalized
    by hand, for the float and the int8 file."""
    import os
    import subprocess
    import sys

    where = os.environ.get("TFLITE_SUPPORT_PATH", str(Path(mcc.__file__).parent / ".deps/tflite-support"))
    assert Path(where, "tflite_support").is_dir(), (
        f"no tflite-support in {where}: run scripts/setup-dev, or pip install --no-deps --target DIR "
        "tflite-support==0.4.4 protobuf==3.20.3 and set TFLITE_SUPPORT_PATH=DIR")
    tmp, labels = with_metadata
    graph, example = mnv2
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = np.array([127.5, 120, 110], np.float32), np.float32(64)
    paths = {}
    for target in TFLITE_TARGETS:
        data = compile_model(graph, target, calib=_calib(example) if "int8" in target else None,
                             metadata={"normalization": {"mean": mean.tolist(), "std": [float(std)]},
                                       "labels": tmp / "labels.txt"}).data
        paths[target] = tmp / f"task.{target}.tflite"
        paths[target].write_bytes(data)
        np.save(str(paths[target]) + ".npy", image)
    env = {**os.environ, "PYTHONPATH": where, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    done = subprocess.run([sys.executable, "-c", _TASK_LIBRARY, *map(str, paths.values())], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for target, path in paths.items():
        got = seen[str(path)]
        assert got["files"] == ["labels.txt"]
        unit = got["metadata"]["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"][0]
        assert unit["options"] == {"mean": mean.tolist(), "std": [float(std)] * 3}
        want = run_litert(path.read_bytes(), {"x": ((image - mean) / std)[None].astype(np.float32)},
                          "default")["classifier.1"][0]
        assert got["scores"] == pytest.approx({labels[i]: float(v) for i, v in enumerate(want)}, abs=1e-6), target
