"""An embedding lookup at a model's integer input (token ids), the first op of every language model: nn.Embedding
through torch.export and ONNX Gather of a constant table, to every target. In int8 the lookup stays a float island
(its input is not a float activation) and everything after it is integer."""

import pytest
import torch
from compile_checks import compile_everywhere
from torch import nn
from tflite_ops import operator_names

from mcc.ir import Graph


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(torch.relu(self.embed(ids)))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_embedding_of_integer_inputs_compiles_to_every_target(dtype, tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(1)).to(dtype)
    results = compile_everywhere(Tagger(), tuple(ids.shape), tmp_path, sources=("pt2",), example=ids)
    tflite = results["pt2", "arm-int8"]
    assert tflite.graph.inputs[0].dtype == str(dtype).split(".")[-1]
    assert "GATHER" in operator_names(tflite.data) and "FULLY_CONNECTED" in operator_names(tflite.data)
    float_ops = [r["notes"].get("float_ops") for r in tflite.report["passes"] if r["pass"] == "quantize_int8"][0]
    assert [op for op in float_ops if "embed" in str(op)]


def test_onnx_gather_of_a_constant_table_at_integer_inputs(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(1))
    compile_everywhere(Tagger(), tuple(ids.shape), tmp_path, sources=("onnx",), example=ids,
                       targets=("arm-fp32", "x86-fp32"))


def test_run_time_indices_into_a_run_time_tensor_are_refused():
    g = Graph()
    x = g.add_input("x", (4, 8), "float32")
    ids = g.add_input("ids", (3,), "int64")
    with pytest.raises(ValueError, match="constant table"):
        g.add_node("gather", [x, ids], {"axis": 0})
