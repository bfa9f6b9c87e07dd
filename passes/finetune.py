"""Fine-tuning with distillation: train a compressed float graph's weights to reproduce its uncompressed teacher.

The pass `finetune` runs after the compression passes of a pipeline (pruning today, low-rank splits or binary
weights later) and before quantization; without data (option `finetune` None) it changes nothing. With data, the
student (the graph the pass receives) is trained through passes/ir_module.IRModule and its trained weights are
written back into the graph's constants, which the pipeline then quantizes as usual.

The loss mixes, as Hinton et al. ("Distilling the Knowledge in a Neural Network"), the task cross-entropy (when
the data has `labels`) with the KL divergence from the teacher's temperature-softened class distribution to the
student's, scaled by T^2 so its gradients keep their size as T changes: alpha * CE + (1 - alpha) * T^2 *
KL(softmax(teacher / T) || softmax(student / T)); without labels distillation alone. Outputs that are not class
logits (anything but 2-D [N, K > 1] not made by a softmax) are matched to the teacher by mean squared error.
The teacher's outputs are computed once, by mcc's float runtime on the teacher graph (the model as loaded, before
any compression), so the teacher needs no torch and is the same model the fidelity figures refer to.

Adam with a cosine-decayed learning rate (from `finetune_lr` to 0 over all steps): the last weights are the ones
written, with no held-out data to pick an epoch by, and a decayed rate ends on settled weights rather than on
whatever the last full-size step did. Runs are deterministic: torch seeded (its global RNG untouched), samples
shuffled by numpy's RandomState, so the same data and options give the same weights and the same output file.
Re-running the pipeline on the same student with the same data (the fidelity guard's float reference, the
fallback analysis) reuses the trained weights instead of training again.

Peers (Torch-Pruning's examples, NNCF's QAT loops) leave the training loop to the user's framework; mcc trains
its own IR, so the weights trained are those of the graph it emits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..datafiles import match_inputs, read_arrays
from ..errors import MccError, require
from ..ir import Graph
from .calibrate import outputs_on
from .manager import PassContext, content_digest, register_pass

LABELS = "labels"


@dataclass
class FinetuneData:
    """Training samples by input name (batch first, in the graph's layout), optional integer `labels`, and the
    teacher graph whose outputs the student learns; `path` names the file in messages."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    teacher: Graph
    path: str | None = None
    _teacher_outputs: list | None = field(default=None, repr=False)
    _trained: dict = field(default_factory=dict, repr=False)  # student digest -> (weights by name, summary)

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def teacher_outputs(self) -> list[np.ndarray]:
        """The teacher graph's outputs on every sample, computed once (mcc's float runtime, re-batched runs)."""
        if self._teacher_outputs is None:
            self._teacher_outputs = [o.astype(np.float32) for o in outputs_on(self.teacher, self.inputs)]
        return self._teacher_outputs


def logit_outputs(graph: Graph) -> list[int]:
    """Positions of the graph outputs that are class logits: 2-D [N, K > 1], not produced by a softmax."""
    found = []
    for k, t in enumerate(graph.outputs):
        producer = graph.producer(t)
        if len(t.shape) == 2 and t.shape[1] > 1 and (producer is None or producer.op != "softmax"):
            found.append(k)
    return found


def read_finetune_data(path, teacher: Graph) -> FinetuneData:
    """The --finetune file checked against the teacher (the source model): one array per model input (as for
    --calib), an optional integer `labels` array of one class index per sample for the model's one logits output;
    every problem is an MccError naming the file."""
    require("torch", "torch", "fine-tuning (--finetune)")  # before reading: a base install says what to install
    arrays = read_arrays(path)
    labels = arrays.pop(LABELS, None)
    if not arrays:
        raise MccError(f"holds only '{LABELS}'; fine-tuning also needs the model's input arrays, named after its "
                       f"inputs ({', '.join(t.name for t in teacher.inputs)})", path=path)
    feeds, _ = match_inputs(arrays, teacher.inputs, path=path)
    counts = {k: len(v) for k, v in feeds.items()}
    n, batch = max(counts.values()), teacher.inputs[0].shape[0]
    if len(set(counts.values())) > 1:
        raise MccError(f"input arrays differ in sample count {counts}; give every input the same samples", path=path)
    if n % batch:
        raise MccError(f"{n} samples do not split into batches of {batch}, the model's batch size; give a multiple "
                       f"of {batch}", path=path)
    for name, a in feeds.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise MccError(f"input '{name}' holds NaN or infinite values; fine-tuning needs finite data", path=path)
    if labels is not None:
        _check_labels(labels, n, teacher, path)
        labels = labels.astype(np.int64)
    return FinetuneData(feeds, labels, teacher, str(path))


def _check_labels(labels: np.ndarray, n: int, teacher: Graph, path) -> None:
    if labels.dtype.kind not in "iu":
        raise MccError(f"'{LABELS}' has dtype {labels.dtype}; labels are integer class indices, one per sample "
                       "(save them with .astype(np.int64))", path=path)
    if labels.shape != (n,):
        raise MccError(f"'{LABELS}' has shape {list(labels.shape)}, expected [{n}]: one class index per sample of "
                       "the input arrays", path=path)
    logits = logit_outputs(teacher)
    if len(logits) != 1:
        raise MccError(f"has '{LABELS}', but the model has {len(logits)} class-logits outputs (2-D [N, K>1]) for "
                       f"them to score; drop '{LABELS}' to fine-tune by distillation alone", path=path)
    classes = teacher.outputs[logits[0]].shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise MccError(f"'{LABELS}' holds class indices from {labels.min()} to {labels.max()}, outside the model's "
                       f"{classes} classes [0, {classes})", path=path)


@dataclass
class FinetuneOptions:
    finetune: FinetuneData | None = None  # None: the pass does nothing
    epochs: int = 5
    finetune_lr: float = 1e-3
    temperature: float = 4.0
    finetune_batch: int = 64
    distill_alpha: float = 0.5  # weight of the task loss when there are labels
    finetune_seed: int = 0


@register_pass("finetune", options=FinetuneOptions, requires=("float",))
def finetune_pass(graph: Graph, ctx: PassContext) -> Graph:
    opts = ctx.options
    if opts.finetune is None:
        return ctx.unchanged(graph)
    from .binarize import binary_weight_transforms  # binary layers train through a straight-through sign

    ctx.note("finetune", finetune(graph, opts.finetune, opts, ctx.progress, binary_weight_transforms(graph)))
    return graph


def finetune(graph: Graph, data: FinetuneData, opts: FinetuneOptions, progress=None,
             weight_transforms: dict | None = None) -> dict:
    """Train `graph`'s weights (in place: its weight constants are replaced) to match `data`'s teacher; returns the
    summary the report shows (epochs, final loss, accuracy and teacher agreement before and after). The trained
    weights are kept for a second call on the same graph (the fidelity guard's float reference), so
    `weight_transforms` must follow from the graph (as binarize's do): their names join the key."""
    _check_options(opts)
    key = _digest(graph, opts) + ",".join(sorted(weight_transforms or {}))
    if key in data._trained:
        weights, summary = data._trained[key]
        for t in graph.constants():
            if t.name in weights:
                t.data = weights[t.name]
        return summary
    import torch

    from .ir_module import IRModule

    teacher = data.teacher_outputs()
    _check_outputs(graph, data.teacher, teacher)
    logits = logit_outputs(graph)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.finetune_seed)
        module = IRModule(graph, weight_transforms)
        trainer = _Trainer(module, graph, data, teacher, logits, opts)
        before = trainer.measure()
        losses = trainer.train(progress)
        after = trainer.measure()
    module.write_back(graph)
    summary = {"samples": data.samples, "labels": data.labels is not None, "epochs": opts.epochs,
               "batch": opts.finetune_batch, "lr": opts.finetune_lr, "schedule": "cosine",
               "temperature": opts.temperature, "alpha": opts.distill_alpha if data.labels is not None else 0.0,
               "parameters": sum(int(p.numel()) for p in module.params),
               "final_loss": round(losses[-1], 6),
               "epoch_losses": [round(v, 6) for v in losses], "before": before, "after": after}
    data._trained[key] = ({t.name: t.data for t in graph.constants() if t.name in module.param_names}, summary)
    return summary


def _check_options(opts: FinetuneOptions) -> None:
    for name, value, ok in (("epochs", opts.epochs, opts.epochs >= 1), ("finetune_batch", opts.finetune_batch,
                            opts.finetune_batch >= 1), ("finetune_lr", opts.finetune_lr, opts.finetune_lr > 0),
                            ("temperature", opts.temperature, opts.temperature > 0),
                            ("distill_alpha", opts.distill_alpha, 0 <= opts.distill_alpha <= 1)):
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise MccError(f"fine-tuning option {name} is {value!r}; epochs and batch are at least 1, the learning "
                           "rate and temperature positive, distill_alpha in [0, 1]")


def _check_outputs(student: Graph, teacher: Graph, values: list[np.ndarray]) -> None:
    if len(student.outputs) != len(values):
        raise MccError(f"the graph being fine-tuned has {len(student.outputs)} outputs and its teacher "
                       f"{len(values)}; distillation matches them one to one")
    for s, t, v in zip(student.outputs, teacher.outputs, values):
        if s.dtype != "float32" or t.dtype != "float32":
            raise MccError(f"output '{s.name}' is {s.dtype} (the teacher's {t.dtype}); distillation trains float32 "
                           "outputs only")
        if tuple(s.shape[1:]) != tuple(v.shape[1:]):
            raise MccError(f"output '{s.name}' has shape {list(s.shape)} and the teacher's '{t.name}' "
                           f"{list(t.shape)}; distillation needs the outputs to keep their shapes (compress inside "
                           "the model, not its outputs)")


def _digest(graph: Graph, opts: FinetuneOptions) -> str:
    """The student's structure, weights and the options that decide training, as one hash."""
    return content_digest(graph, (opts.epochs, opts.finetune_lr, opts.temperature, opts.finetune_batch,
                                  opts.distill_alpha, opts.finetune_seed))


class _Trainer:
    """The loop's state: module, optimizer, data as torch tensors, and the loss."""

    def __init__(self, module, graph: Graph, data: FinetuneData, teacher: list[np.ndarray], logits: list[int],
                 opts: FinetuneOptions):
        import torch

        self.torch, self.module, self.opts = torch, module, opts
        self.inputs = [torch.from_numpy(np.ascontiguousarray(data.inputs[t.name])) for t in graph.inputs]
        self.teacher = [torch.from_numpy(np.ascontiguousarray(v)) for v in teacher]
        self.labels = None if data.labels is None else torch.from_numpy(data.labels)
        self.logits = logits
        self.scored = logits[0] if logits and data.labels is not None else None  # the output labels score
        self.n = data.samples

    def loss(self, outs, idx):
        F = self.torch.nn.functional
        T, alpha = self.opts.temperature, self.opts.distill_alpha
        total = 0.0
        for k, (s, t) in enumerate(zip(outs, self.teacher)):
            t = t[idx]
            if k not in self.logits:
                total = total + F.mse_loss(s, t)
                continue
            kd = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean",
                          log_target=True) * (T * T)
            if k == self.scored:
                total = total + alpha * F.cross_entropy(s, self.labels[idx]) + (1 - alpha) * kd
            else:
                total = total + kd
        return total

    def train(self, progress) -> list[float]:
        torch, opts = self.torch, self.opts
        optimizer = torch.optim.Adam(self.module.parameters(), lr=opts.finetune_lr)
        per_epoch = -(-self.n // opts.finetune_batch)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.epochs * per_epoch)
        order = np.random.RandomState(opts.finetune_seed)
        losses = []
        self.module.train()
        for epoch in range(opts.epochs):
            total, hits = 0.0, 0
            shuffled = torch.from_numpy(order.permutation(self.n))
            for start in range(0, self.n, opts.finetune_batch):
                idx = shuffled[start:start + opts.finetune_batch]
                outs = self.module(*(x[idx] for x in self.inputs))
                loss = self.loss(outs, idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(idx)
                hits += self._hits(outs, idx)
            losses.append(total / self.n)
            if progress is not None:
                progress.say(f"finetune epoch {epoch + 1}/{opts.epochs}: loss {losses[-1]:.4f}"
                             + self._rate(hits))
        self.module.eval()
        return losses

    def _hits(self, outs, idx) -> int:
        """Samples the batch got right: by label with labels, else agreeing with the teacher's top-1."""
        if not self.logits:
            return 0
        k = self.scored if self.scored is not None else self.logits[0]
        want = self.labels[idx] if self.scored is not None else self.teacher[k][idx].argmax(1)
        return int((outs[k].detach().argmax(1) == want).sum())

    def _rate(self, hits: int) -> str:
        if not self.logits:
            return ""
        return f", train {'accuracy' if self.scored is not None else 'agreement'} {100 * hits / self.n:.2f}%"

    def measure(self) -> dict:
        """Accuracy (with labels), top-1 agreement with the teacher and the lowest output SQNR against the
        teacher, on all training samples."""
        torch = self.torch
        with torch.no_grad():
            parts = [self.module(*(x[i:i + 256] for x in self.inputs)) for i in range(0, self.n, 256)]
            outs = [torch.cat(p) for p in zip(*parts)]
        result = {}
        if self.scored is not None:
            result["accuracy"] = round(float((outs[self.scored].argmax(1) == self.labels).double().mean()), 6)
        if self.logits:
            agree = [float((outs[k].argmax(1) == self.teacher[k].argmax(1)).double().mean()) for k in self.logits]
            result["teacher_agreement"] = round(min(agree), 6)
        sqnr = []
        for s, t in zip(outs, self.teacher):
            noise = float(((s.double() - t.double()) ** 2).sum())
            sqnr.append(math.inf if noise == 0 else 10 * math.log10(float((t.double() ** 2).sum()) / noise))
        worst = min(sqnr)
        result["sqnr_db"] = None if math.isinf(worst) else round(worst, 4)
        return result
