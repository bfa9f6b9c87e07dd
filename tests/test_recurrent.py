"""LSTM and GRU unrolled by frontend.recurrent: onnx's own LSTM/GRU node cases and torch's nn.LSTM / nn.GRU, checked
against onnx's expected outputs and torch, through the runtime, float TFLite in LiteRT and float ONNX in onnxruntime,
and in int8 bit for bit against LiteRT (both kernel sets) and onnxruntime."""

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx.backend.test.case.node import collect_testcases

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.frontend import load
from mcc.frontend.torch_export import from_module
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from mcc.validate import validate
from test_onnx_backend import session
from tflite_ops import operator_names

CASES = {c.name: c for c in collect_testcases(None) if c.name.startswith(("test_lstm_", "test_gru_"))}
WEIGHT_SLOTS = (1, 2, 3, 4, 7)  # W, R, B, sequence_lens, P: constants in a compiled model


def spread(a):
    """The output's range, or its magnitude when it is constant (a one-step state)."""
    return max(float(np.ptp(a)), float(np.abs(a).max()), 1e-6)


def close(got, want, tol=1e-4):
    assert got.shape == want.shape and np.abs(got - want).max() <= tol * spread(want)


def node_case(name, tmp_path):
    """The case's model with its weights as initializers (the suite feeds them as inputs), saved; its feeds and
    expected outputs by name."""
    case = CASES[name]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    feeds = {v.name: a for v, a in zip(model.graph.input, inputs)}
    node = model.graph.node[0]
    weights = {node.input[i] for i in WEIGHT_SLOTS if i < len(node.input) and node.input[i]}
    kept = [v for v in model.graph.input if v.name not in weights]
    model.graph.initializer.extend(onnx.numpy_helper.from_array(feeds.pop(w), w) for w in sorted(weights))
    del model.graph.input[:]
    model.graph.input.extend(kept)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path, feeds, {v.name: o for v, o in zip(model.graph.output, outputs)}


@pytest.mark.parametrize("name", sorted(set(CASES) - {"test_lstm_with_peepholes"}))
def test_onnx_node_cases_unroll_to_float_files_that_match_onnx(name, tmp_path):
    path, feeds, want = node_case(name, tmp_path)
    graph = load(path)
    kind = "LSTM" if "lstm" in name else "GRU"
    steps = CASES[name].data_sets[0][0][0].shape[1 if "batchwise" in name else 0]
    node = CASES[name].model.graph.node[0]
    label = node.name or next(o for o in node.output if o)
    assert graph.origin["notes"] == [f"{kind} '{label}' unrolled over {steps} steps"]
    got = run(graph, feeds)
    for out, w in want.items():
        close(got[out], w)
    result = compile_model(path, "arm-fp32")
    tflite = result.data
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= set(operator_names(tflite))
    layout = next(r for r in result.report["passes"] if r["pass"] == "to_nhwc")["notes"]["io_layout"]["outputs"]
    for kernels in ("ref", "default"):
        got = run_litert(tflite, feeds, kernels)
        for out, w in want.items():  # a 4-D output the layout pass made NHWC, as the report says
            close(got[out], w.transpose(layout[out]) if out in layout else w)
    onnx_out = compile_model(path, "x86-fp32").data
    got = dict(zip(want, session(onnx_out).run(list(want), feeds)))
    for out, w in want.items():
        close(got[out], w)


def test_onnx_peepholes_are_refused_by_node(tmp_path):
    path, _, _ = node_case("test_lstm_with_peepholes", tmp_path)
    with pytest.raises(MccError, match="LSTM.*peephole"):
        load(path)


def _gru_model(tmp_path, **attrs):
    """A one-node ONNX GRU (hidden 3, input 2, 4 steps) with the given attributes."""
    rng = np.random.default_rng(0)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    weights = [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("W", (dirs, 9, 2)), ("R", (dirs, 9, 3)), ("B", (dirs, 18)))]
    inputs = ["X", "W", "R", "B"]
    if "sequence_lens" in attrs:
        weights.append(onnx.numpy_helper.from_array(np.array(attrs.pop("sequence_lens"), np.int32), "L"))
        inputs += ["L"]
    node = onnx.helper.make_node("GRU", inputs, ["Y"], name="gru", hidden_size=3, **attrs)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("X", 1, [4, 2, 2])],
                                   [onnx.helper.make_tensor_value_info("Y", 1, None)], weights)
    path = tmp_path / "gru.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("attrs, message", [
    ({"activations": ["Relu", "Tanh"]}, "activations .* not supported.*default"),
    ({"clip": 3.0}, "'clip' is not supported"),
    ({"sequence_lens": [4, 2]}, "sequence_lens shorter"),
])
def test_onnx_recurrent_forms_without_an_unrolling_are_refused(tmp_path, attrs, message):
    with pytest.raises(MccError, match=message) as e:
        load(_gru_model(tmp_path, **attrs))
    assert e.value.node == "gru"


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_onnx_gru_with_both_reset_forms_matches_onnx_reference(tmp_path, linear_before_reset):
    from onnx.reference import ReferenceEvaluator

    path = _gru_model(tmp_path, linear_before_reset=linear_before_reset, direction="bidirectional")
    x = np.random.default_rng(1).standard_normal((4, 2, 2)).astype(np.float32)
    want = ReferenceEvaluator(str(path)).run(None, {"X": x})[0]
    close(run(load(path), {"X": x})["Y"], want)


# ---- torch --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first, bidirectional", [(True, True), (False, False), (False, True)])
def test_torch_recurrent_layers_match_torch(cls, batch_first, bidirectional):
    torch.manual_seed(0)
    module = cls(5, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional).eval()
    x = torch.randn((2, 3, 5) if batch_first else (3, 2, 5))
    h0 = torch.randn(2 * (1 + bidirectional), 2, 4)
    args = (x, (h0, torch.randn_like(h0))) if cls is nn.LSTM else (x, h0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = from_module(module, args)
    assert graph.origin["notes"] == [f"{cls.__name__} '{cls.__name__.lower()}' unrolled over 3 steps"]
    with torch.no_grad():
        y, state = module(*args)
    want = [y] + (list(state) if cls is nn.LSTM else [state])
    got = run(graph, {t.name: a.numpy() for t, a in zip(graph.inputs, [x, *args[1:]] if cls is nn.GRU
                                                         else [x, *args[1]])})
    for t, w in zip(graph.outputs, want):
        close(got[t.name], w.numpy())


def test_torch_lstm_projections_are_refused():
    with warnings.catch_warnings(), pytest.raises(MccError, match="proj_size"):
        warnings.simplefilter("ignore")
        from_module(nn.LSTM(4, 6, proj_size=3), (torch.randn(2, 1, 4),))


class Audio(nn.Module):
    """A keyword-spotting shape: a conv front end over a [1, 1, 40, 32] log-mel patch, a recurrent layer over the
    8 remaining time frames, a linear head on the last frame."""

    def __init__(self, rnn, hidden=12, layers=1, bidirectional=False):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.rnn = rnn(8 * 10, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (1 + bidirectional), 10)

    def forward(self, x):
        y = self.conv(x).permute(0, 3, 1, 2).flatten(2)   # [B, 8 frames, 8 channels * 10 mel bins]
        y, _ = self.rnn(y)
        return self.head(y[:, -1])


def log_mel_like(n, seed):
    """Positive-skewed, time-correlated values like a log-mel spectrogram."""
    rng = np.random.default_rng(seed)
    base = np.log1p(rng.gamma(2.0, 1.0, (n, 1, 40, 32)))
    return (base + np.cumsum(rng.standard_normal((n, 1, 40, 1)) * 0.1, axis=2)).astype(np.float32)


@pytest.fixture(scope="module", params=[("GRU", 2, True), ("LSTM", 1, False)], ids=["gru", "lstm"])
def audio(request, tmp_path_factory):
    kind, layers, bidirectional = request.param
    torch.manual_seed(0)
    module = Audio(getattr(nn, kind), layers=layers, bidirectional=bidirectional).eval()
    folder = tmp_path_factory.mktemp(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 40, 32),)), folder / "audio.pt2")
    np.savez(folder / "calib.npz", x=log_mel_like(16, 1))
    np.savez(folder / "eval.npz", x=log_mel_like(3, 2))
    return kind, folder, module


def test_audio_model_compiles_to_float_tflite_and_onnx_that_run_like_torch(audio):
    kind, folder, module = audio
    x = np.load(folder / "eval.npz")["x"]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    result = compile_model(folder / "audio.pt2", "arm-fp32")
    assert f"{kind} 'rnn' unrolled over 8 steps" in result.report["source"]["origin"]["notes"]
    out = result.graph.outputs[0].name
    for kernels in ("ref", "default"):
        got = np.concatenate([run_litert(result.data, {"x": x[i:i + 1].transpose(0, 2, 3, 1)}, kernels)[out]
                              for i in range(len(x))])
        close(got, want)
    result = compile_model(folder / "audio.pt2", "x86-fp32")
    sess = session(result.data)
    got = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    close(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm-int8", "x86-int8"])
def test_audio_model_compiles_to_int8_that_validates_bit_for_bit(audio, target):
    kind, folder, module = audio
    out = folder / f"audio_{target}.{'tflite' if target.startswith('arm') else 'onnx'}"
    result = compile_model(folder / "audio.pt2", target, out, calib=folder / "calib.npz",
                           options={"observer": "minmax", "require_int8": True})
    float_graph = compile_model(folder / "audio.pt2", target.replace("int8", "fp32")).graph
    weights = lambda g: {id(n.inputs[1]) for n in g.nodes if n.op == "fully_connected"}  # noqa: E731
    assert len(weights(result.graph)) == len(weights(float_graph))   # read by every step, stored once
    report = validate(out, folder / "eval.npz", reference_path=folder / "audio.pt2")
    for comparison in report["comparisons"]:
        assert comparison["elements"] > 0 and comparison["differing"] == 0, comparison["kernels"]
    assert all(entry["sqnr_db"] > 15 for entry in report["fidelity"].values())


def test_cli_prints_the_unrolling_note(tmp_path, capsys):
    from mcc.cli import main

    path, _, _ = node_case("test_gru_defaults", tmp_path)
    assert main(["compile", str(path), "--target", "arm-fp32", "-o", str(tmp_path / "gru.tflite")]) == 0
    steps = CASES["test_gru_defaults"].data_sets[0][0][0].shape[0]
    assert f"unrolled over {steps} steps" in capsys.readouterr().out
