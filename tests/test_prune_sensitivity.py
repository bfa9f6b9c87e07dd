"""`mcc prune-sensitivity` (prune_sensitivity.py): one row per group and ratio, a PNG plot, and a group the model
depends on shows lower accuracy (or SQNR) than a group it barely reads."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mcc.cli import main
from mcc.frontend.torch_export import from_module
from mcc.passes.finetune import FinetuneData
from mcc.prune_sensitivity import sensitivity


class TwoPaths(nn.Module):
    """Two convs side by side, concatenated into the classifier; the classifier's columns for `quiet` are scaled
    by 1e-3, so the logits hang on `loud` alone."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.loud, self.quiet = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(2, 8, 3, padding=1)
        self.fc = nn.Linear(16, 5)
        with torch.no_grad():
            self.fc.weight[:, 8:] *= 1e-3

    def forward(self, x):
        feats = [torch.flatten(F.avg_pool2d(F.relu(c(x)), 4), 1) for c in (self.loud, self.quiet)]
        return self.fc(torch.cat(feats, 1))


@pytest.fixture(scope="module")
def two_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sens")
    model = TwoPaths().eval()
    x = np.random.default_rng(0).normal(size=(200, 2, 4, 4)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()  # the unpruned model is 100% right
    example = torch.from_numpy(x[:1])
    torch.export.save(torch.export.export(model, (example,)), folder / "m.pt2")
    np.savez(folder / "val.npz", x=x, labels=labels)
    return folder, model, x, labels


def test_sensitivity_cli_table_plot_and_the_sensitive_group(two_paths, tmp_path, capsys):
    folder, _, _, _ = two_paths
    png, out = tmp_path / "s.png", tmp_path / "s.json"
    assert main(["prune-sensitivity", str(folder / "m.pt2"), "--data", str(folder / "val.npz"), "--ratios",
                 "0.25,0.5,0.75", "--plot", str(png), "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["metric"] == "accuracy" and result["baseline"] == 1.0
    rows = {(r["group"], r["ratio"]): r for r in result["rows"]}
    assert len(result["rows"]) == len(rows) == 6 and {g for g, _ in rows} == {"loud", "quiet"}
    assert [rows["loud", r]["kept"] for r in (0.25, 0.5, 0.75)] == [6, 4, 2]
    for ratio in (0.5, 0.75):
        assert rows["loud", ratio]["value"] < rows["quiet", ratio]["value"] - 0.1
        assert rows["quiet", ratio]["value"] >= 0.95
    assert len([line for line in printed.splitlines() if line.startswith(("loud ", "quiet "))]) == 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_without_labels_is_output_sqnr(two_paths):
    _, model, x, _ = two_paths
    graph = from_module(model, (torch.from_numpy(x[:1]),))
    result = sensitivity(graph, FinetuneData({"x": x}, None, graph), (0.5,))
    value = {r["group"]: r["value"] for r in result.rows}
    assert result.metric == "sqnr_db" and result.baseline == float("inf")
    assert value["quiet"] > value["loud"] + 20


def test_bad_ratios_are_refused(two_paths, capsys):
    folder, _, _, _ = two_paths
    assert main(["prune-sensitivity", str(folder / "m.pt2"), "--data", str(folder / "val.npz"),
                 "--ratios", "0.5,1.5"]) == 2
    assert "in (0, 1)" in capsys.readouterr().err
