"""The PyTorch frontend: every lowered aten op against torch, errors that name op, node and line, and `load`'s
format sniffing on real files (archives, pickles, state_dicts, damaged and foreign files)."""

import inspect
import linecache
import struct
import subprocess
import sys
import types
import zipfile
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mcc.errors import MccError
from mcc.examples.zoo import mobilenet_v3_small_style
from mcc.frontend import load
from mcc.frontend.torch_export import from_exported_program, from_module
from mcc.runtime import run


class Fn(nn.Module):
    """A module around a function of (layers, *inputs), so one-line cases need no class of their own."""

    def __init__(self, fn, **layers):
        super().__init__()
        self.fn = fn
        self.layers = nn.ModuleDict(layers)
        self.register_buffer("k", torch.linspace(-1.0, 1.0, 4).reshape(1, 4, 1, 1))

    def forward(self, *xs):
        return self.fn(self, *xs)


def _bn(channels, affine=True):
    bn = nn.BatchNorm2d(channels, affine=affine)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    if affine:
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    return bn


def _inputs(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s, generator=g) for s in shapes)


def check_against_torch(module, *inputs):
    """Lower `module`, run the IR in mcc's runtime and compare every output with torch's; returns the graph."""
    module.eval()
    graph = from_module(module, inputs)
    graph.verify()
    got = run(graph, {t.name: x.numpy() for t, x in zip(graph.inputs, inputs)})
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want) == len(graph.outputs)
    for t, w in zip(graph.outputs, want):
        w = w.numpy()
        assert got[t.name].shape == w.shape
        span = float(w.max() - w.min()) if w.size else 0.0
        err = float(np.abs(got[t.name] - w).max())
        assert err <= 1e-5 + 1e-4 * span, f"output {t.name}: max abs error {err} (range {span})"
    return graph


X4 = [(1, 4, 8, 8)]
# (id, module factory, input shapes, IR ops the lowering must produce)
CASES = [
    ("conv2d", lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), [(1, 4, 9, 9)], {"conv2d"}),
    ("conv2d_dilated_no_bias", lambda: nn.Conv2d(4, 3, 3, padding=2, dilation=2, bias=False), X4, {"conv2d"}),
    ("conv2d_rect_kernel", lambda: nn.Conv2d(4, 3, (1, 3), stride=(2, 1), padding=(0, 1)), X4, {"conv2d"}),
    ("grouped_conv2d", lambda: nn.Conv2d(4, 6, 3, groups=2), X4, {"conv2d"}),
    ("depthwise", lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), X4, {"depthwise_conv2d"}),
    ("depthwise_multiplier", lambda: nn.Conv2d(4, 8, 3, stride=2, groups=4), X4, {"depthwise_conv2d"}),
    ("linear", lambda: nn.Linear(6, 5), [(2, 6)], {"fully_connected"}),
    ("linear_no_bias_3d", lambda: nn.Linear(6, 5, bias=False), [(2, 3, 6)], {"fully_connected", "reshape"}),
    ("mm_constant_weight", lambda: Fn(lambda m, x: x @ m.k.reshape(4, 1)), [(3, 4)], {"fully_connected"}),
    ("matmul_transposed_weight", lambda: Fn(lambda m, x: torch.matmul(x, m.layers.l.weight.t()), l=nn.Linear(4, 7)),
     [(2, 4)], {"fully_connected"}),
    ("batch_norm", lambda: nn.Sequential(nn.Conv2d(4, 5, 1), _bn(5)), X4, {"batch_norm"}),
    ("batch_norm_no_affine", lambda: _bn(4, affine=False), X4, {"batch_norm"}),
    ("relu", lambda: nn.ReLU(), X4, {"relu"}),
    ("relu6", lambda: nn.ReLU6(), X4, {"relu6"}),
    ("hardtanh", lambda: nn.Hardtanh(-0.5, 0.7), X4, {"clip"}),
    ("clamp_min_zero", lambda: Fn(lambda m, x: x.clamp(min=0)), X4, {"relu"}),
    ("clamp_min", lambda: Fn(lambda m, x: x.clamp(min=0.1)), X4, {"maximum"}),
    ("clamp_max", lambda: Fn(lambda m, x: x.clamp(max=0.2)), X4, {"minimum"}),
    ("hardswish", lambda: nn.Hardswish(), X4, {"hardswish"}),
    ("hardsigmoid", lambda: nn.Hardsigmoid(), X4, {"hardsigmoid"}),
    ("sigmoid", lambda: nn.Sigmoid(), X4, {"sigmoid"}),
    ("silu", lambda: nn.SiLU(), X4, {"silu"}),
    ("tanh", lambda: nn.Tanh(), X4, {"tanh"}),
    ("prelu_per_channel", lambda: nn.PReLU(4, init=0.1), X4, {"prelu"}),
    ("prelu_shared", lambda: nn.PReLU(init=0.3), X4, {"prelu"}),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), X4, {"leaky_relu"}),
    ("add", lambda: Fn(lambda m, x, y: x + y), X4 * 2, {"add"}),
    ("add_alpha", lambda: Fn(lambda m, x, y: torch.add(x, y, alpha=2.5)), X4 * 2, {"add", "mul"}),
    ("add_scalar_and_buffer", lambda: Fn(lambda m, x: x + 1.5 + m.k), X4, {"add"}),
    ("sub", lambda: Fn(lambda m, x, y: x - y), X4 * 2, {"sub"}),
    ("sub_alpha_constant", lambda: Fn(lambda m, x: torch.sub(x, m.k, alpha=3)), X4, {"sub"}),
    ("rsub_scalar", lambda: Fn(lambda m, x: 2 - x), X4, {"sub"}),
    ("mul_squeeze_excite", lambda: Fn(lambda m, x, s: x * torch.sigmoid(s)), [(1, 4, 8, 8), (1, 4, 1, 1)], {"mul"}),
    ("div", lambda: Fn(lambda m, x, y: x / (y * y + 1)), X4 * 2, {"div"}),
    ("div_scalar", lambda: Fn(lambda m, x: x / 4), X4, {"div"}),
    ("reciprocal", lambda: Fn(lambda m, x: 3 / (x * x + 1)), X4, {"div"}),
    ("cat", lambda: Fn(lambda m, x, y: torch.cat([x, y], 1)), X4 * 2, {"concat"}),
    ("cat_with_constant", lambda: Fn(lambda m, x: torch.cat([x, m.k.expand(1, 4, 8, 8)], -1)), X4, {"concat"}),
    ("max_pool2d", lambda: nn.MaxPool2d(3, 2, padding=1), X4, {"max_pool2d"}),
    ("max_pool2d_ceil", lambda: nn.MaxPool2d(3, 2, ceil_mode=True), X4, {"max_pool2d"}),
    ("max_pool2d_ceil_padded", lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), [(1, 4, 10, 9)], {"max_pool2d"}),
    ("avg_pool2d", lambda: nn.AvgPool2d(3, 2), X4, {"avg_pool2d"}),
    ("avg_pool2d_padded", lambda: nn.AvgPool2d(3, 2, padding=1), X4, {"avg_pool2d"}),
    ("avg_pool2d_padded_excluded", lambda: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), X4,
     {"avg_pool2d"}),
    ("avg_pool2d_ceil", lambda: nn.AvgPool2d(2, 2, ceil_mode=True), [(1, 4, 7, 7)], {"avg_pool2d"}),
    ("avg_pool2d_ceil_padded_excluded", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
     [(1, 4, 8, 8)], {"avg_pool2d"}),
    ("adaptive_avg_pool_1x1", lambda: nn.AdaptiveAvgPool2d(1), X4, {"mean"}),
    ("adaptive_avg_pool_2x2", lambda: nn.AdaptiveAvgPool2d(2), X4, {"avg_pool2d"}),
    ("adaptive_max_pool_1x1", lambda: nn.AdaptiveMaxPool2d(1), X4, {"max_pool2d"}),
    ("adaptive_max_pool_2x2", lambda: nn.AdaptiveMaxPool2d(2), X4, {"max_pool2d"}),
    ("adaptive_avg_pool_uneven", lambda: nn.AdaptiveAvgPool2d(3), X4, {"slice", "avg_pool2d", "concat"}),
    ("adaptive_avg_pool_one_axis_uneven", lambda: nn.AdaptiveAvgPool2d((3, 4)), X4,
     {"slice", "concat", "avg_pool2d"}),
    ("adaptive_max_pool_uneven", lambda: nn.AdaptiveMaxPool2d((5, 3)), X4, {"slice", "max_pool2d", "concat"}),
    ("as_strided_reshape", lambda: Fn(lambda m, x: x.as_strided((1, 4, 64), (256, 64, 1)) * 2), X4, {"reshape"}),
    ("as_strided_slice", lambda: Fn(lambda m, x: x.as_strided((1, 2, 3, 4), (256, 128, 16, 2), 9)), X4, {"slice"}),
    ("as_strided_of_transpose", lambda: Fn(lambda m, x: x.transpose(2, 3).as_strided((1, 4, 8, 8), (256, 64, 1, 8))),
     X4, {"transpose"}),
    ("as_strided_overlapping", lambda: Fn(lambda m, x: x.as_strided((1, 4, 6, 3, 3), (256, 64, 9, 8, 1))), X4,
     {"gather"}),
    ("unfold", lambda: Fn(lambda m, x: x.unfold(3, 3, 2)), X4, {"gather"}),
    ("linear_of_transposed_input", lambda: Fn(lambda m, x: m.layers["fc"](x.transpose(2, 3)), fc=nn.Linear(8, 5)), X4,
     {"fully_connected"}),
    ("diagonal", lambda: Fn(lambda m, x: x.diagonal(-1, 2, 3)), X4, {"gather"}),
    ("mean_hw", lambda: Fn(lambda m, x: x.mean((-1, -2))), X4, {"mean"}),
    ("mean_all", lambda: Fn(lambda m, x: x.mean()), X4, {"mean"}),
    ("flatten", lambda: nn.Flatten(), X4, {"reshape"}),
    ("view_squeeze_unsqueeze", lambda: Fn(lambda m, x: x.mean((2, 3), keepdim=True).squeeze(-1).unsqueeze(0)
                                          .view(4, 1, 1, 1)), X4, {"mean", "reshape"}),
    ("permute", lambda: Fn(lambda m, x: x.permute(0, 2, 3, 1)), X4, {"transpose"}),
    ("softmax", lambda: nn.Softmax(1), X4, {"softmax"}),
    ("softmax_last", lambda: Fn(lambda m, x: F.softmax(x.flatten(1), -1)), X4, {"softmax"}),
    ("zero_pad", lambda: nn.ZeroPad2d((1, 2, 0, 1)), X4, {"pad"}),
    ("constant_pad", lambda: nn.ConstantPad2d(1, 0.5), X4, {"pad"}),
]


@pytest.mark.parametrize("make,shapes,ops", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_matches_torch(make, shapes, ops):
    torch.manual_seed(0)
    graph = check_against_torch(make(), *_inputs(shapes))
    assert ops <= {n.op for n in graph.nodes}


def test_conv_attributes():
    torch.manual_seed(0)
    graph = check_against_torch(nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, groups=4), nn.Conv2d(8, 6, 3, groups=2,
                                                                                                padding=(1, 2))),
                                *_inputs(X4))
    dw, grouped = graph.nodes
    assert (dw.op, dw.attrs["multiplier"], dw.attrs["stride"], dw.inputs[1].shape) == ("depthwise_conv2d", 2, [2, 2],
                                                                                       (8, 1, 3, 3))
    assert (grouped.op, grouped.attrs["groups"], grouped.attrs["padding"]) == ("conv2d", 2, [1, 2, 1, 2])
    assert all(t.layout == "NCHW" for n in graph.nodes for t in n.outputs) and graph.inputs[0].layout == "NCHW"


def test_ceil_mode_becomes_bottom_right_padding():
    graph = check_against_torch(nn.MaxPool2d(3, 2, ceil_mode=True), *_inputs([(1, 2, 8, 8)]))
    assert graph.nodes[0].attrs["padding"] == [0, 0, 1, 1]


def test_linear_weight_is_a_named_constant_in_out_by_in_order():
    torch.manual_seed(0)
    fc = nn.Linear(6, 5)
    graph = check_against_torch(nn.Sequential(fc), *_inputs([(2, 6)]))
    (node,) = graph.nodes
    assert node.inputs[1].name == "0.weight" and node.inputs[1].data.dtype == np.float32
    np.testing.assert_array_equal(node.inputs[1].data, fc.weight.detach().numpy())


def test_batch_norm_inputs_follow_ir_order():
    torch.manual_seed(0)
    bn = _bn(4)
    (node,) = check_against_torch(bn, *_inputs(X4)).nodes
    for t, ref in zip(node.inputs[1:], (bn.running_mean, bn.running_var, bn.weight, bn.bias)):
        np.testing.assert_array_equal(t.data, ref.detach().numpy())
    assert node.attrs["eps"] == bn.eps


def test_identity_like_ops_disappear():
    graph = check_against_torch(nn.Sequential(nn.Dropout(0.5), nn.Identity(), Fn(lambda m, x: x.clone().contiguous()),
                                              nn.ReLU(), nn.Dropout2d()), *_inputs(X4))
    assert [n.op for n in graph.nodes] == ["relu"]


def test_constant_subgraphs_are_folded_with_torch():
    # exp, sum and the permute/matmul of weights are no IR ops: they only ever see constants here
    graph = check_against_torch(Fn(lambda m, x: x * (m.k.exp().sum() + (m.k.reshape(4, 1) @ m.k.reshape(1, 4)).t())),
                                *_inputs([(1, 4, 4, 4)]))
    assert [n.op for n in graph.nodes] == ["mul"] and graph.nodes[0].inputs[1].shape == (4, 4)


class _ThreeOutputs(nn.Module):
    def forward(self, image, scale):
        return scale * 2, image, torch.relu(image)


def test_outputs_keep_order_and_inputs_keep_names():
    graph = check_against_torch(_ThreeOutputs(), *_inputs(X4 * 2))
    assert [t.name for t in graph.inputs] == ["image", "scale"]
    assert [graph.producer(t).op for t in graph.outputs] == ["mul", "identity", "relu"]


def test_from_exported_program_and_training_mode_is_restored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4), nn.ReLU()).train()
    x = _inputs([(1, 3, 6, 6)])
    from_module(model, x)
    assert model.training
    graph = from_exported_program(torch.export.export(model.eval(), x))
    assert [n.op for n in graph.nodes] == ["conv2d", "batch_norm", "relu"]


class _ConvThen(nn.Module):
    """A conv followed by `then`, defined here so that stack traces point into this file."""

    def __init__(self, then):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.then = then

    def forward(self, x):
        y = self.conv(x)
        return self.then(y)


def _line_of(fn, text):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_node_source_is_the_model_line():
    graph = from_module(_ConvThen(lambda y: torch.sigmoid(y)), _inputs([(1, 3, 4, 4)]))
    conv, sigmoid = graph.nodes
    assert conv.source == f"{__file__}:{_line_of(_ConvThen.forward, 'self.conv(x)')}"
    file, line = sigmoid.source.rsplit(":", 1)
    assert file == __file__ and "self.then(y)" in linecache.getline(file, int(line))


def test_nodes_are_named_after_modules_and_constants_after_state_dict_keys():
    graph = check_against_torch(nn.Sequential(_ConvThen(torch.relu), nn.Flatten()), *_inputs([(1, 3, 4, 4)]))
    assert [n.name for n in graph.nodes] == ["0.conv", "0.relu", "1"]
    assert [t.name for t in graph.nodes[0].inputs[1:]] == ["0.conv.weight", "0.conv.bias"]


def test_unsupported_op_names_op_node_and_line():
    with pytest.raises(MccError) as e:
        from_module(_ConvThen(torch.sin), _inputs([(1, 3, 4, 4)]))
    msg = str(e.value)
    assert "aten.sin.default" in msg and "node 'sin'" in msg and e.value.node == "sin"
    assert f"{__file__}:{_line_of(_ConvThen.forward, 'self.then(y)')}" in msg


@pytest.mark.parametrize("module,shapes,words", [
    (Fn(lambda m, x, w: F.conv_transpose2d(x, w)), [(1, 3, 4, 4), (3, 3, 2, 2)], "needs a constant weight"),
    (Fn(lambda m, x: x[:, 1:].as_strided((1, 2), (1, 1), 0)), X4, "reads memory outside its input"),
    (nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), X4, "count_include_pad"),
    (Fn(lambda m, x: F.max_pool2d(x, 2, return_indices=True)[1].float()), X4, "output 1 of"),
    (Fn(lambda m, x: x if x.sum() > 0 else -x), X4, "could not export"),
], ids=["conv_transpose_computed_weight", "as_strided_outside_its_input",
        "avg_pool_ceil_include_pad", "max_pool_indices", "data_dependent_control_flow"])
def test_unsupported_forms_are_explained(module, shapes, words):
    with pytest.raises(MccError, match=words):
        from_module(module, _inputs(shapes))


def test_dynamic_shapes_are_refused():
    ep = torch.export.export(nn.ReLU(), _inputs([(2, 3)]), dynamic_shapes=({0: torch.export.Dim("batch")},))
    with pytest.raises(MccError, match="dynamic"):
        from_exported_program(ep)


def test_import_does_not_import_torch():
    code = "import sys, mcc.frontend; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- load(): formats recognised by content ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _bn(4), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    return model, _inputs([(1, 3, 8, 8)])[0]


def _assert_runs_like(graph, model, x):
    got = next(iter(run(graph, {graph.inputs[0].name: x.numpy()}).values()))
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


def test_load_pt2_with_any_extension(tiny, tmp_path):
    model, x = tiny
    path = tmp_path / "model.bin"
    torch.export.save(torch.export.export(model, (x,)), path)
    graph = load(path)
    assert graph.name == "model" and [t.name for t in graph.inputs] == ["input"]  # nn.Sequential.forward(input)
    _assert_runs_like(graph, model, x)


@pytest.mark.parametrize("compile_ts", [torch.jit.trace, torch.jit.script], ids=["traced", "scripted"])
def test_load_torchscript_needs_input_shapes(tiny, tmp_path, compile_ts):
    model, x = tiny
    path = tmp_path / "model.pt"
    torch.jit.save(compile_ts(model, (x,)) if compile_ts is torch.jit.trace else compile_ts(model), path)
    with pytest.raises(MccError, match="input_shapes"):
        load(path)
    graph = load(path, input_shapes=[tuple(x.shape)])
    assert [t.name for t in graph.inputs] == ["input"]
    _assert_runs_like(graph, model, x)


def test_pickled_module_is_refused_unless_trusted(tmp_path):
    model, x = mobilenet_v3_small_style()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(MccError, match="trust_pickle") as e:
        load(path)
    assert str(path) in str(e.value)
    with pytest.raises(MccError, match="input_shapes"):
        load(path, trust_pickle=True)
    graph = load(path, trust_pickle=True, input_shapes=[tuple(x.shape)])
    got = next(iter(run(graph, {"x": x.numpy()}).values()))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * float(want.max() - want.min())


def test_trusted_pickle_whose_class_cannot_be_imported(tmp_path, monkeypatch):
    ghost = types.ModuleType("mcc_test_ghost")

    class Ghost(nn.Module):
        def forward(self, x):
            return x * 2

    Ghost.__module__, Ghost.__qualname__, ghost.Ghost = "mcc_test_ghost", "Ghost", Ghost
    monkeypatch.setitem(sys.modules, "mcc_test_ghost", ghost)
    torch.save(Ghost(), tmp_path / "ghost.pt")
    monkeypatch.delitem(sys.modules, "mcc_test_ghost")
    with pytest.raises(MccError, match="could not be unpickled.*importable"):
        load(tmp_path / "ghost.pt", trust_pickle=True, input_shapes=[(1, 3)])


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_state_dict_is_refused_with_advice(tiny, tmp_path, zipped):
    path = tmp_path / "weights.pt2"
    torch.save(tiny[0].state_dict(), path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(MccError, match="state_dict.*torch.export.save"):
        load(path, trust_pickle=True)


def test_pickled_tensor_is_not_a_model(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(MccError, match="holds a Tensor, not a model"):
        load(path)


@pytest.fixture(scope="module")
def pt2_bytes(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    torch.export.save(torch.export.export(tiny[0], (tiny[1],)), path)
    return path.read_bytes()


def test_truncated_archive(pt2_bytes, tmp_path):
    path = tmp_path / "cut.pt2"
    path.write_bytes(pt2_bytes[: len(pt2_bytes) // 2])
    with pytest.raises(MccError, match="truncated or corrupt") as e:
        load(path)
    assert str(path) in str(e.value)


def test_corrupt_archive_member(pt2_bytes, tmp_path):
    path = tmp_path / "bad.pt2"
    path.write_bytes(pt2_bytes)
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(pt2_bytes)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MccError, match=f"corrupt.*{info.filename}"):
        load(path)


def _png() -> bytes:
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("content", [_png(), b"conv2d 3x3 relu\n", b""], ids=["png", "text", "empty"])
def test_foreign_file_with_torch_extension(tmp_path, content):
    path = tmp_path / "model.pt2"
    path.write_bytes(content)
    with pytest.raises(MccError, match="not a model format.*torch.export archive.*TorchScript") as e:
        load(path)
    assert str(path) in str(e.value)


def test_zip_that_is_not_a_torch_archive(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(MccError, match="not a PyTorch model archive"):
        load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MccError, match="no such file") as e:
        load(tmp_path / "absent.pt2")
    assert "absent.pt2" in str(e.value)
    with pytest.raises(MccError, match="not a file"):
        load(tmp_path)


def test_bad_input_shapes(tiny, tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(tiny[0], (tiny[1],)), path)
    with pytest.raises(MccError, match="input_shapes must be"):
        load(path, input_shapes=[(1, 0, 8)])
