"""Loading a .pt2 without torch's ExportedProgram (frontend.pt2_archive.LightProgram, its graph built from the JSON by
frontend.pt2_graph): where the direct lowering applies, the graph holds what torch's deserializer gives (names,
targets, arguments, users, shapes, module paths) and the IR, constants' bytes included, is the one lowering torch's
deserialized ExportedProgram gives; where it does not, or the light reader does not cover the archive, the whole
program is rebuilt as torch does. Members are CRC-checked as they are read, the unread ones after."""

import json
import zipfile

import bad_inputs as bi

import pytest
import torch
import torch.nn as nn

from mcc.errors import MccError
from mcc.examples import zoo
from mcc.frontend.loader import load
from mcc.frontend.pt2_archive import LightProgram, read_pt2
from mcc.frontend.torch_export import core_names, lower
from mcc.ir.text import dumps


def _save(model, x, path):
    torch.export.save(torch.export.export(model.eval(), (x,)), path)
    return path


def _ir(graph) -> str:
    return dumps(graph, inline_constants=True)


def _old(path) -> str:
    """The IR through torch's ExportedProgramDeserializer, as mcc read every .pt2 before LightProgram."""
    ep = read_pt2(path)
    assert not isinstance(ep, LightProgram)
    return _ir(lower(ep, name=path.stem, path=path))


def _graph(graph) -> list:
    """What the lowering reads of each FX node, with each value's sizes, strides and dtype for its "val"."""
    def arg(v):
        if isinstance(v, torch.fx.Node):
            return "%" + v.name
        return type(v)(arg(x) for x in v) if isinstance(v, (list, tuple)) else v

    def val(v):
        if isinstance(v, (list, tuple)):
            return [val(x) for x in v]
        return (tuple(v.shape), v.stride(), v.dtype) if isinstance(v, torch.Tensor) else v
    return [(n.op, n.name, n.target, arg(n.args), {k: arg(v) for k, v in n.kwargs.items()},
             sorted(u.name for u in n.users), val(n.meta.get("val")), n.meta.get("nn_module_stack"),
             n.meta.get("stack_trace")) for n in graph.nodes]


@pytest.mark.parametrize("name", ["resnet18_style", "mobilenet_v2_style", "mobilenet_v3_small_style"])
def test_zoo_archive_is_read_light_and_lowered_to_the_same_ir(name, tmp_path):
    path = _save(*getattr(zoo, name)(), tmp_path / f"{name}.pt2")
    light, full = read_pt2(path, light=True), read_pt2(path)
    assert isinstance(light, LightProgram) and core_names(light) is not None
    assert {n.meta["val"].device.type for n in light.graph.nodes if n.op != "output"} == {"meta"}  # pt2_graph's
    assert _graph(light.graph) == _graph(full.graph)
    assert str(light.graph_signature) == str(full.graph_signature)
    assert _ir(load(path)) == _old(path)


@pytest.mark.slow
def test_bench_mobilenetv2_archive_is_read_light_and_lowered_to_the_same_ir(tmp_path):
    mobilenetv2_w1 = pytest.importorskip("pytorchcv.models.mobilenetv2").mobilenetv2_w1
    torch.manual_seed(0)
    path = _save(mobilenetv2_w1(), torch.randn(1, 3, 224, 224), tmp_path / "mobilenetv2_224.pt2")
    assert core_names(read_pt2(path, light=True)) is not None
    assert _ir(load(path)) == _old(path)


class _ViewOfWritten(nn.Module):
    """A view of a tensor an in-place op writes: outside the direct lowering, so the program is decomposed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y.relu_()
        a, b = y.chunk(2, dim=1)
        return torch.cat([b, a], 1)


def test_program_outside_the_direct_lowering_is_rebuilt_and_decomposed(tmp_path):
    path = _save(_ViewOfWritten(), torch.randn(1, 4, 6, 6), tmp_path / "view.pt2")
    light = read_pt2(path, light=True)
    assert isinstance(light, LightProgram) and core_names(light) is None
    assert isinstance(light.exported_program(), torch.export.ExportedProgram)
    assert _ir(load(path)) == _old(path)


def test_archive_the_light_reader_does_not_cover_falls_back_to_torchs_deserializer(tmp_path):
    """A schema version this torch does not read: the light reader steps aside and torch's refusal is the one the
    user sees, the same message as without the light reader."""
    path = _save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.randn(1, 1, 6, 6), tmp_path / "net.pt2")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in members if n.endswith("models/model.json"))
    program = json.loads(members[name])
    program["schema_version"]["major"] += 1
    members[name] = json.dumps(program).encode()
    bad = tmp_path / "future.pt2"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    messages = []
    for light in (True, False):
        with pytest.raises(MccError, match="schema version") as e:
            read_pt2(bad, light=light)
        messages.append(str(e.value))
    assert messages[0] == messages[1]


def test_node_the_light_reader_does_not_cover_falls_back_to_the_same_ir(tmp_path):
    """Arguments recorded without their kind (as torch wrote them before 2.5): torch's deserializer places them by
    the operator's schema, the light reader steps aside, and the IR is torch's path's."""
    path = _save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.randn(1, 1, 6, 6), tmp_path / "net.pt2")
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("models/model.json"))
        program = json.loads(z.read(name))
    for node in program["graph_module"]["graph"]["nodes"]:
        for named in node["inputs"]:
            del named["kind"]
    (tmp_path / "old").mkdir()
    old = bi.rewrite_zip(path, tmp_path / "old" / "net.pt2", {"models/model.json": json.dumps(program).encode()})
    ep = read_pt2(old, light=True)
    assert isinstance(ep, torch.export.ExportedProgram)
    assert _ir(load(old)) == _ir(load(path))


def test_member_the_reader_does_not_read_is_still_crc_checked(tmp_path):
    path = _save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.randn(1, 1, 6, 6), tmp_path / "net.pt2")
    for member in (".data/serialization_id", "data/weights/weight_0", "models/model.json"):
        bad = bi.flip_member_byte(path, tmp_path / "bad.pt2", member)
        for trust_pickle in (False, True):
            with pytest.raises(MccError, match=f"member '[^']*{member}' fails its CRC check"):
                load(bad, trust_pickle=trust_pickle)
