"""Pruning sensitivity (`mcc prune-sensitivity`): how much each dependency group alone costs when pruned.

For every prunable group (passes/prune.py's groups, named by the first layer that writes them; the first and last
layer included, since the question is which layers to exclude), and every ratio of a sweep, only that group loses
that fraction of its channels (prune's criterion and uniform rounding, no fine-tuning), and the pruned float graph
runs in mcc's float runtime on the data: test accuracy when the data has `labels`, else the lowest output SQNR
against the unpruned model. Li et al. ("Pruning Filters for Efficient ConvNets") chose per-layer ratios from such
a sweep; Torch-Pruning leaves the sweep to the user's script, mcc runs it on its IR, so the figures are those of the
graph it would emit.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import MccError
from .ir import Graph
from .ir.channels import prunable_groups, remove_channels
from .passes import run_pipeline
from .passes.calibrate import outputs_on
from .passes.finetune import FinetuneData, logit_outputs
from .passes.prune import CRITERIA, importance, kept_after, taylor_scores, tied_batches, uniform_counts
from .targets import CANONICALIZE

DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass
class Sensitivity:
    metric: str  # "accuracy" (with labels) or "sqnr_db" (against the unpruned model)
    baseline: float  # the unpruned model's value (sqnr_db: inf)
    criterion: str
    rows: list[dict] = field(default_factory=list)  # group, channels, ratio, kept, value

    def to_json(self) -> dict:
        finite = (lambda v: v if math.isfinite(v) else None)
        return {"metric": self.metric, "baseline": finite(self.baseline), "criterion": self.criterion,
                "rows": [{**r, "value": finite(r["value"])} for r in self.rows]}


def check_ratios(text: str) -> tuple[float, ...]:
    """--ratios "0.1,0.3" as floats in (0, 1), or an MccError saying what is wrong."""
    try:
        ratios = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise MccError(f"--ratios {text!r}: give comma-separated fractions, e.g. 0.1,0.3,0.5") from None
    if not all(0 < r < 1 for r in ratios):
        raise MccError(f"--ratios {text!r}: each ratio is a fraction of a group's channels in (0, 1)")
    return ratios


def sensitivity(graph: Graph, data: FinetuneData, ratios=DEFAULT_RATIOS, criterion: str = "l1",
                progress=None) -> Sensitivity:
    """The sweep on `data` (inputs by name, optional labels; data.teacher unused: the model is its own
    reference)."""
    if criterion not in CRITERIA:
        raise MccError(f"--criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    base = run_pipeline(graph, list(CANONICALIZE))[0]
    groups = prunable_groups(base)[0]
    if not groups:
        raise MccError(f"model '{graph.name}' has no prunable channel group (every conv / fully-connected output is "
                       "a graph output or feeds a channel-mixing op)")
    logits = logit_outputs(base)
    reference = outputs_on(base, data.inputs)
    if data.labels is not None:
        measure = (lambda outs: float((outs[logits[0]].argmax(1) == data.labels).mean()))
    else:
        measure = (lambda outs: min(_sqnr_db(o, r) for o, r in zip(outs, reference)))
    result = Sensitivity("accuracy" if data.labels is not None else "sqnr_db", measure(reference), criterion)
    taylor = None
    if criterion == "taylor":
        names = sorted({n.outputs[0].name for g in groups for n in g.producers()})
        taylor = taylor_scores(base, names, data.inputs, data.labels)
    for k, group in enumerate(groups):
        score = importance(base, group, criterion, taylor)
        if score is None:  # bn_scale without a batch norm in the group
            continue
        batches = tied_batches(score, group, 1)  # no rounding: the sweep asks what each channel costs
        for ratio in ratios:
            n = uniform_counts([(group, score, batches)], ratio)[0] if batches else 0
            keep = kept_after(group, batches, n) if n else np.arange(group.channels)
            value = result.baseline
            if n:
                pruned = base.copy()
                remove_channels(pruned, pruned.tensor(group.tensor.name), keep)
                value = measure(outputs_on(pruned, data.inputs))
            result.rows.append({"group": group.root.name, "channels": group.channels, "ratio": ratio,
                                "kept": len(keep), "value": value})
        if progress is not None:
            progress.say(f"prune-sensitivity: group {k + 1}/{len(groups)} ({group.root.name})")
    return result


def _sqnr_db(got: np.ndarray, want: np.ndarray) -> float:
    noise = float(((got.astype(np.float64) - want) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((want.astype(np.float64) ** 2).sum()) / noise)


def _fmt(metric: str, v: float) -> str:
    if metric == "accuracy":
        return f"{100 * v:.2f}%"
    return "exact" if not math.isfinite(v) else f"{v:.2f} dB"


def format_sensitivity(s: Sensitivity) -> str:
    """The table: one row per group and ratio."""
    head = "accuracy" if s.metric == "accuracy" else "output SQNR"
    width = max([len("group")] + [len(r["group"]) for r in s.rows])
    lines = [f"pruning sensitivity ({s.criterion}, one group at a time, no fine-tuning); unpruned {head}: "
             f"{_fmt(s.metric, s.baseline)}",
             f"{'group':<{width}}  {'ratio':>5}  {'kept':>9}  {head:>11}"]
    for r in s.rows:
        lines.append(f"{r['group']:<{width}}  {r['ratio']:>5.2f}  {r['kept']:>4}/{r['channels']:<4}  "
                     f"{_fmt(s.metric, r['value']):>11}")
    return "\n".join(lines)


def plot_sensitivity(s: Sensitivity, path) -> None:
    """A PNG: one line per group, the metric against the ratio, the unpruned level dashed (SQNR: exact points
    on the top edge)."""
    from .analyze import pyplot
    from .fileio import write_atomic

    plt = pyplot()
    scale = 100.0 if s.metric == "accuracy" else 1.0
    finite = [r["value"] for r in s.rows if math.isfinite(r["value"])] or [0.0]
    top = max(finite) + 5.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["group"] for r in s.rows):
        rows = [r for r in s.rows if r["group"] == name]
        ax.plot([r["ratio"] for r in rows], [scale * (r["value"] if math.isfinite(r["value"]) else top)
                                             for r in rows], marker="o", label=name)
    if math.isfinite(s.baseline):
        ax.axhline(scale * s.baseline, color="grey", linestyle="--", label="unpruned")
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel("test accuracy (%)" if s.metric == "accuracy" else "output SQNR (dB)")
    ax.set_title(f"pruning sensitivity per group ({s.criterion})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
