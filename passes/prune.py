"""prune: structured channel pruning that removes channels for real (issue 17).

Every dependency group of the graph (ir/channels.py `prunable_groups`: a conv's output channels with everything
tied to them, through residual adds, concat ranges, depthwise convs, grouped convs, squeeze-excite muls and
flattens) is ranked channel by channel, and its lowest-ranked channels are removed with `remove_channels`, so the
emitted file holds smaller weights and runs fewer MACs.

Criteria (option prune_criterion): "l1" / "l2" are the filter norm summed over every weight slice of the group
that carries the channel and over the |gamma| of its batch norms, (sum |w|^p + sum |gamma|^p)^(1/p), on the weights
as trained: the factor gamma / sigma that fold_batchnorm multiplied into a conv's output channels (recorded in
`graph.bn_fold`) is divided back out. That is Torch-Pruning's GroupMagnitudeImportance (its "mean" group reduction
cancels under its "mean" normalizer, which the global schedule applies too); ranking on the folded weights, as mcc
did before, picked other channels and came out 2-3 of 450 test images behind Torch-Pruning on the digits ResNet
at 30 and 70% of the MACs, after the same fine-tuning (mean of 3 seeds, benchmarks/bench_pruning.py). A TFLite or ONNX source whose converter folded its batch
norms has only the folded weights, and is ranked on those. "bn_scale" is
the summed |gamma| of the group's batch norms (network slimming); "taylor" (Molchanov et al., "Pruning
Convolutional Neural Networks for Resource Efficient Inference") is data-driven: per channel, |sum over a batch and
positions of activation * d(loss)/d(activation)| at the outputs of the layers that write the group, summed over
them and over batches (`taylor_scores`, gradients through passes/ir_module.IRModule). Its loss is the task
cross-entropy when the --finetune data has labels, else the cross-entropy against the unpruned model's own top-1
(hard distillation targets: Hinton's soft-target loss against the model's own outputs has zero gradient, as the
model being pruned IS the teacher); its data are the --finetune samples, else the --calib samples.

The pass runs after CANONICALIZE, where batch norms are folded already: it runs there so that it prunes the graph every later pass sees (folded weights carry
the BN scale into L1/L2, as in the exported model) and so that one placement serves every source, including float
TFLite files whose converter folded their batch norms long ago; fold_batchnorm records each |gamma| in
`graph.bn_gamma` for the bn_scale criterion (a group without a batch norm is left alone under it, as Torch-Pruning's
BNScaleImportance leaves it).

Schedules (prune_schedule): "uniform" removes ratio * C channels (rounded half up) of every group (at least one, or
prune_round_to, kept); "global" ranks every channel of every group by its importance divided by its group's mean
importance (Torch-Pruning's "mean" normalizer) and removes the lowest until the graph's MACs drop by `ratio`,
counting each layer's MACs as the product of its remaining input and output channel fractions, so the ratio
reached is exact, not the linear estimate; the notes give the ratio achieved. Torch-Pruning's global pruning ranks
by the same normalized score but removes every channel under a threshold set by a channel count, so it overshoots
the MAC goal by its last step; the two sets are nested, and asked for the MACs Torch-Pruning reached, mcc removes
the very channels it removed (benchmarks/bench_pruning.py, row "mcc @TP MACs"). Groups written by a layer matching an
exclude pattern (fnmatch on node names), and by default the groups of the first and last conv / fully-connected
layer, are not pruned. A grouped conv keeps an equal number of channels in every group, and prune_round_to keeps
a multiple of it (XNNPACK packs channels by 8).

Torch-Pruning prunes torch modules it can trace; mcc prunes its IR, so ONNX and TFLite sources prune too, and the
MACs it counts are those of the layers the target will run.
"""

from __future__ import annotations

import fnmatch
import heapq
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from ..ir.channels import ChannelError, Group, prunable_groups, remove_channels
from ..ir.ops import macs
from ..ir.stats import layer_table, totals
from ..ir.traits import channel_axis, traits, weight_axes, weighted
from .finetune import FinetuneData
from .manager import PassContext, register_pass


@dataclass
class PruneOptions:
    # Named prune_* because a pipeline hands every pass one shared option dict (passes/manager.py).
    prune: float | None = None  # fraction of each group's channels (uniform) or of the MACs (global); 0/None: off
    prune_criterion: Literal["l1", "l2", "bn_scale", "taylor"] = "l1"
    prune_schedule: Literal["uniform", "global"] = "uniform"
    prune_exclude: tuple = ()  # fnmatch patterns on node names
    prune_first_last: bool = False  # prune the groups of the first and last conv / FC layer too
    prune_round_to: int = 1
    finetune: FinetuneData | None = None  # the taylor criterion's data: --finetune samples (and labels) first,
    calibration: dict | None = None       # else the --calib samples


def importance(graph: Graph, group: Group, criterion: str, taylor: dict | None = None) -> np.ndarray | None:
    """One score per channel of the group (higher: more important); None under bn_scale for a group without a
    batch norm. `taylor`: taylor_scores of the group's producer outputs, for the taylor criterion."""
    score = np.zeros(group.channels)
    if criterion == "taylor":
        written = {n.outputs[0].name for n in group.producers()}
        for u, keep, label in group.tensors:
            if u.name in written:
                owned = label >= 0
                np.add.at(score, label[owned], taylor[u.name][keep[owned]])
        return score
    if criterion == "bn_scale":
        found = False
        for u, keep, label in group.tensors:
            p = graph.producer(u)
            if p is not None and p.name in graph.bn_gamma:
                owned = label >= 0
                np.add.at(score, label[owned], graph.bn_gamma[p.name][keep[owned]])
                found = True
        return score if found else None
    power = 1 if criterion == "l1" else 2
    for n, i, axis, keep, label in group.slices:
        if i == 1 and weighted(n.op):
            w = np.abs(np.moveaxis(as_trained(graph, n), axis, 0)) ** power
            owned = label >= 0
            np.add.at(score, label[owned], w.reshape(w.shape[0], -1).sum(axis=1)[keep[owned]])
    for n, keep, label in group.grouped:  # input channel k*per_in + j of a grouped conv: slice j of group k's rows
        out_axis, in_axis = weight_axes(n)
        w = np.abs(np.moveaxis(as_trained(graph, n), (out_axis, in_axis), (0, 1))) ** power
        g = n.attrs["groups"]
        per_channel = w.reshape(g, w.shape[0] // g, w.shape[1], -1).sum(axis=(1, 3)).ravel()
        owned = label >= 0
        np.add.at(score, label[owned], per_channel[keep[owned]])
    for u, keep, label in group.tensors:  # each batch norm of the group, one more slice: its |gamma|
        p = graph.producer(u)
        if p is not None and p.name in graph.bn_gamma:
            owned = label >= 0
            np.add.at(score, label[owned], graph.bn_gamma[p.name][keep[owned]] ** power)
    return score ** (1.0 / power)


def as_trained(graph: Graph, node: Node) -> np.ndarray:
    """The node's weights (float64) as the source model trained them: a folded batch norm's factor gamma / sigma
    divided back out of each output channel (a zero factor left the channel's weights zero, and zero they stay)."""
    w = node.inputs[1].data.astype(np.float64)
    factor = graph.bn_fold.get(node.name)
    if factor is None:
        return w
    shape = [1] * w.ndim
    shape[weight_axes(node)[0]] = -1
    factor = factor.reshape(shape)
    return np.divide(w, factor, out=np.zeros_like(w), where=factor != 0)


def removal_batches(score: np.ndarray, blocks: np.ndarray | None, round_to: int) -> list[np.ndarray]:
    """The group's channels in the order they are removed, in batches that each leave a legal count: one channel
    per block of a grouped conv at a time, lowest score first within each block, kept counts a multiple of
    lcm(round_to, blocks); at least that many channels always stay."""
    blocks = np.zeros(len(score), np.int64) if blocks is None else blocks
    n_blocks = int(blocks.max()) + 1
    order = [np.flatnonzero(blocks == k)[np.argsort(score[blocks == k], kind="stable")] for k in range(n_blocks)]
    units = np.stack(order, axis=1)  # row j: each block's j-th least important channel
    quantum = math.lcm(round_to, n_blocks)
    size = len(score)
    if size <= quantum:
        return []
    first = (size % quantum) // n_blocks or quantum // n_blocks
    cuts = list(range(first, (size - quantum) // n_blocks + 1, quantum // n_blocks))
    starts = [0] + cuts[:-1]
    return [units[a:b].ravel() for a, b in zip(starts, cuts)]


def tied_batches(score: np.ndarray, group: Group, round_to: int) -> list[np.ndarray]:
    """removal_batches over the group's tied classes (each removed whole, scored by its summed score), expanded
    back to channels; ValueError when the classes differ in size or straddle a grouped conv's groups."""
    if group.tied is None:
        return removal_batches(score, group.blocks, round_to)
    reps, cls = np.unique(group.tied, return_inverse=True)
    members = [np.flatnonzero(cls == k) for k in range(len(reps))]
    size = len(members[0])
    if any(len(m) != size for m in members):
        raise ValueError("its channels are tied in classes of unequal sizes")
    blocks = None
    if group.blocks is not None:
        if any(len(set(group.blocks[m].tolist())) > 1 for m in members):
            raise ValueError("tied channels fall in different groups of a grouped conv")
        blocks = np.unique(group.blocks[reps], return_inverse=True)[1].ravel()
    batches = removal_batches(np.array([score[m].sum() for m in members]), blocks, round_to // math.gcd(round_to, size))
    return [np.concatenate([members[k] for k in b]) for b in batches]


class _MacModel:
    """The graph's MACs as channels go: each weighted layer's MACs times the fraction left of each of its channel
    axes (in and out), exact for conv, depthwise and fully-connected layers."""

    def __init__(self, graph: Graph, groups: list[Group]):
        self.total = totals(graph)["macs"]
        self.base = {id(n): macs(n) for g in groups for n, *_ in g.axes}
        self.left = {id(n): {} for g in groups for n, *_ in g.axes}  # node -> {"in"/"out": fraction left}
        for g in groups:
            for n, side, *_ in g.axes:
                self.left[id(n)][side] = 1.0

    def _layer(self, key) -> float:
        return self.base[key] * math.prod(self.left[key].values())

    def remove(self, group: Group, count: int) -> None:
        touched = {id(n) for n, *_ in group.axes}
        before = sum(self._layer(k) for k in touched)
        for n, side, channels, per in group.axes:
            self.left[id(n)][side] -= count * per / channels
        self.total += sum(self._layer(k) for k in touched) - before


def _excluded(graph: Graph, group: Group, opts: PruneOptions) -> str | None:
    names = [n.name for n in group.producers()]
    for pattern in opts.prune_exclude:
        hit = next((n for n in names if fnmatch.fnmatchcase(n, pattern)), None)
        if hit:
            return f"layer '{hit}' matches --prune-exclude '{pattern}'"
    if not opts.prune_first_last:
        layers = [n.name for n in graph.nodes if traits(n.op).channels == "weights"]
        edge = next((n for n in names if n in (layers[0], layers[-1])), None)
        if edge:
            return f"layer '{edge}' is the {'first' if edge == layers[0] else 'last'} layer (prune_first_last)"
    return None


TAYLOR_SAMPLES, TAYLOR_BATCH = 1024, 64  # the first samples of the data are enough to rank channels


def taylor_scores(graph: Graph, names: list[str], inputs: dict[str, np.ndarray],
                  labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """For each named activation, per channel, sum over batches of |sum over the batch and positions of
    activation * d(loss)/d(activation)| (Molchanov et al.'s first-order Taylor importance). The loss: the mean
    cross-entropy of the model's one class-logits output against `labels`, or without them against the model's
    own top-1 of each output that is class logits."""
    import torch

    from .finetune import logit_outputs
    from .ir_module import IRModule

    logits = logit_outputs(graph)
    if not logits:
        raise MccError("--prune-criterion taylor ranks channels by the gradient of a classification loss, and the "
                       "model has no class-logits output (2-D [N, K>1]); use --prune-criterion l1 or l2")
    n = min(TAYLOR_SAMPLES, len(next(iter(inputs.values()))))
    module = IRModule(graph)
    scores = {name: 0.0 for name in names}
    for start in range(0, n, TAYLOR_BATCH):
        stop = min(start + TAYLOR_BATCH, n)
        taps = dict.fromkeys(names)
        outs = module(*(torch.from_numpy(np.ascontiguousarray(inputs[t.name][start:stop])) for t in graph.inputs),
                      taps=taps)
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(outs[logits[0]], torch.from_numpy(labels[start:stop]))
        else:
            loss = sum(torch.nn.functional.cross_entropy(outs[k], outs[k].detach().argmax(1)) for k in logits)
        module.zero_grad()
        loss.backward()
        for name, t in taps.items():
            axis = channel_axis(graph.tensor(name))
            product = (t * t.grad).detach().double().movedim(axis, 0)
            scores[name] = scores[name] + product.reshape(product.shape[0], -1).sum(1).abs().numpy()
    return scores


def _taylor(graph: Graph, groups: list[Group], opts: PruneOptions) -> dict[str, np.ndarray]:
    """taylor_scores of every group's producer outputs, on the --finetune data (with its labels) or --calib."""
    if opts.finetune is not None:
        inputs, labels = opts.finetune.inputs, opts.finetune.labels
    elif opts.calibration:
        inputs, labels = opts.calibration, None
    else:
        raise MccError("--prune-criterion taylor ranks channels on data: give --finetune TRAIN.npz (its labels "
                       "are used when present) or --calib SAMPLES.npz")
    names = sorted({n.outputs[0].name for g in groups for n in g.producers()})
    return taylor_scores(graph, names, inputs, labels)


CRITERIA, SCHEDULES = ("l1", "l2", "bn_scale", "taylor"), ("uniform", "global")


def check_values(ratio, criterion="l1", schedule="uniform", round_to=1) -> None:
    """MccError for a pruning option out of range (the CLI calls this before any work)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise MccError(f"--prune {ratio}: the pruning ratio is a fraction in [0, 1), e.g. 0.3 to remove 30% of each "
                       "group's channels (--prune-schedule uniform) or of the MACs (global)")
    if criterion not in CRITERIA:
        raise MccError(f"--prune-criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    if schedule not in SCHEDULES:
        raise MccError(f"--prune-schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise MccError(f"--prune-round-to {round_to}: kept channels are rounded to a multiple of a positive whole "
                       "number (1: no rounding, 8: XNNPACK's channel packing)")


def _check(graph: Graph, opts: PruneOptions) -> None:
    check_values(opts.prune, opts.prune_criterion, opts.prune_schedule, opts.prune_round_to)
    names = [n.name for n in graph.nodes]
    for pattern in opts.prune_exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise MccError(f"--prune-exclude '{pattern}' matches no layer of the model; layer names look like "
                           f"{', '.join(repr(n) for n in names[:4])} (see `mcc inspect`)")


def plan(graph: Graph, opts: PruneOptions) -> tuple[list[tuple[Group, np.ndarray]], dict]:
    """(group, channels it keeps) for every group that loses channels, and the notes on the rest."""
    groups, refused = prunable_groups(graph)
    skipped = dict(refused)
    ranked = []
    taylor = _taylor(graph, groups, opts) if opts.prune_criterion == "taylor" and groups else None
    for group in groups:
        reason = _excluded(graph, group, opts)
        score = importance(graph, group, opts.prune_criterion, taylor) if reason is None else None
        if reason is None and score is None:
            reason = "no batch norm in the group (criterion bn_scale)"
        batches = []
        if reason is None:
            try:
                batches = tied_batches(score, group, opts.prune_round_to)
            except ValueError as e:
                reason = str(e)
        if reason is None and not batches:
            reason = f"{group.channels} channels: none can go (at least {opts.prune_round_to} stay)"
        if reason is not None:
            skipped[group.root.name] = reason
        else:
            ranked.append((group, score, batches))
    taken = (uniform_counts(ranked, opts.prune) if opts.prune_schedule == "uniform"
             else _global(graph, ranked, opts.prune))
    chosen = [(group, kept_after(group, batches, n)) for (group, _, batches), n in zip(ranked, taken) if n]
    return chosen, skipped


def kept_after(group: Group, batches: list[np.ndarray], n: int) -> np.ndarray:
    """The group's channels left once its first n removal batches are gone."""
    return np.setdiff1d(np.arange(group.channels), np.concatenate(batches[:n]))


def uniform_counts(ranked, ratio) -> list[int]:
    """Per group, the number of batches whose kept count is closest to C - ratio * C rounded (ties keep more)."""
    taken = []
    for group, _, batches in ranked:
        target = group.channels - int(ratio * group.channels + 0.5)  # half up, not Python's half to even
        kept = group.channels - np.cumsum([0] + [len(b) for b in batches])
        taken.append(int(np.argmin(np.abs(kept - target) * 2 + (kept < target))))
    return taken


def _global(graph: Graph, ranked, ratio) -> list[int]:
    """Batches taken lowest normalized importance first, across groups, until the MACs drop by `ratio`."""
    model = _MacModel(graph, [g for g, _, _ in ranked])
    # MACs are whole numbers: the goal is the whole-MAC budget and the running total (a sum of float products)
    # is rounded before the comparison, so float error neither takes one channel more nor stops one short.
    goal = math.floor(model.total * (1 - ratio) + 1e-6)
    heap = []
    for k, (group, score, batches) in enumerate(ranked):
        normal = score / score.mean() if score.mean() > 0 else score
        ranked[k] = (group, normal, batches)
        heapq.heappush(heap, (float(normal[batches[0]].mean()), k))
    taken = [0] * len(ranked)
    while heap and round(model.total) > goal:
        _, k = heapq.heappop(heap)
        group, normal, batches = ranked[k]
        model.remove(group, len(batches[taken[k]]))
        taken[k] += 1
        if taken[k] < len(batches):
            heapq.heappush(heap, (float(normal[batches[taken[k]]].mean()), k))
    return taken


@register_pass("prune", options=PruneOptions, requires=("float", "no_batch_norm"))
def prune(graph: Graph, ctx: PassContext) -> Graph:
    """Remove the lowest-ranked channels of every prunable group (option prune: the ratio; 0 or None leaves the
    graph untouched). Notes: each pruned group's channels before and after, the groups left alone and why, and
    per-layer params and MACs before and after."""
    opts = ctx.options
    if not opts.prune:
        return ctx.unchanged(graph)
    _check(graph, opts)
    before = {r.name: r for r in layer_table(graph)}
    macs_before = totals(graph)["macs"]
    chosen, skipped = plan(graph, opts)
    done = []
    for group, keep in chosen:
        try:
            remove_channels(graph, group.tensor, keep)
            done.append((group, keep))
        except ChannelError as e:  # refused as a whole, graph unchanged: the group keeps its channels
            skipped[group.root.name] = f"refused when cut: {e}"
    graph.bn_gamma, graph.bn_fold = {}, {}  # their channels are gone: the records served this pass only
    macs_after = totals(graph)["macs"]
    ctx.note("criterion", opts.prune_criterion)
    ctx.note("schedule", opts.prune_schedule)
    ctx.note("groups", [{"group": g.root.name, "channels": g.channels, "kept": len(k), "removed": g.channels - len(k)}
                        for g, k in done])
    ctx.note("left_alone", skipped)
    ctx.note("mac_ratio_removed", round(1 - macs_after / macs_before, 4) if macs_before else 0.0)
    ctx.note("layers", [{"name": r.name, "op": r.op, "params_before": before[r.name].params, "params_after": r.params,
                         "macs_before": before[r.name].macs, "macs_after": r.macs}
                        for r in layer_table(graph) if r.name in before and (before[r.name].params or r.params)])
    return graph
