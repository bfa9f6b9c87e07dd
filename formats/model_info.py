"""What an app needs to feed a model and read its answer, beyond the graph: input normalization and output labels.

The writers embed it where each format's tools look: TFLite Metadata (formats/tflite/metadata.py, read by the TFLite
Support library and Android Studio's model binding) and ONNX metadata_props. It is checked against the model before
any work, so a label file whose line count is not the class count fails at once instead of mislabelling on a
phone. TFLite's metadata writers (tflite_support.metadata_writers) check only that the files exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import MccError
from ..ir import Graph

KEYS = ("normalization", "labels")


@dataclass(frozen=True)
class ModelInfo:
    input_name: str | None = None  # the input the normalization applies to
    mean: tuple[float, ...] = ()  # (x - mean) / std per channel; one value applies to every channel
    std: tuple[float, ...] = ()
    output_name: str | None = None  # the output whose last axis the labels name
    labels_file: str | None = None  # the label file's base name, as packed into the model
    labels: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = {}
        if self.mean:
            out["normalization"] = {"input": self.input_name, "mean": list(self.mean), "std": list(self.std),
                                    "formula": "(x - mean) / std, per channel"}
        if self.labels:
            out["labels"] = {"output": self.output_name, "file": self.labels_file, "count": len(self.labels)}
        return out


def _channels(t) -> int:
    """The channel count of an input: NCHW's dimension 1 for a 4-D tensor not tagged NHWC, else the last one."""
    return t.shape[1] if len(t.shape) == 4 and t.layout != "NHWC" else t.shape[-1]


def _numbers(value, key: str) -> tuple[float, ...]:
    values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if (not isinstance(values, (list, tuple)) or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
        raise MccError(f"metadata normalization '{key}' is {value!r}; give a finite number or a list of them, one "
                       "per input channel")
    return tuple(float(v) for v in values)


def model_info(metadata: dict | None, graph: Graph) -> ModelInfo | None:
    """The checked ModelInfo of compile_model's `metadata` option ({"normalization": {"mean": [...], "std": [...]},
    "labels": path}), or None when it is empty; MccError naming the key for anything that does not fit `graph`."""
    if not metadata:
        return None
    unknown = sorted(set(metadata) - set(KEYS))
    if unknown:
        raise MccError(f"metadata key(s) {', '.join(map(repr, unknown))} are not ones mcc embeds; use "
                       f"{' and '.join(map(repr, KEYS))}")
    fields = {}
    norm = metadata.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
            raise MccError(f"metadata normalization is {norm!r}; give {{'mean': [...], 'std': [...]}}")
        if len(graph.inputs) != 1:
            raise MccError(f"metadata normalization describes one input, and the model has {len(graph.inputs)}; "
                           "normalize inside the model or drop the normalization")
        x = graph.inputs[0]
        mean, std = _numbers(norm["mean"], "mean"), _numbers(norm["std"], "std")
        channels = _channels(x)
        for key, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise MccError(f"metadata normalization '{key}' has {len(values)} values and input '{x.name}' "
                               f"{list(x.shape)} has {channels} channels; give 1 or {channels} values")
        if any(s == 0 for s in std):
            raise MccError("metadata normalization 'std' holds 0, which (x - mean) / std cannot divide by")
        # one value for every channel is repeated beside a per-channel other: the Task Library's image
        # classifier refuses a mean and a std of different lengths, which the schema's comment allows
        n = max(len(mean), len(std))
        mean, std = mean * (n // len(mean)), std * (n // len(std))
        fields.update(input_name=x.name, mean=mean, std=std)
    labels = metadata.get("labels")
    if labels is not None:
        path = Path(labels)
        if not path.is_file():
            raise MccError("no such label file; give a text file with one label per line", path=path)
        try:
            names = tuple(path.read_text(encoding="utf-8").splitlines())
        except UnicodeDecodeError:
            raise MccError("the label file is not UTF-8 text; give one label per line", path=path) from None
        y = graph.outputs[0]
        if len(names) != y.shape[-1]:
            raise MccError(f"the label file has {len(names)} lines and output '{y.name}' {list(y.shape)} has "
                           f"{y.shape[-1]} classes on its last axis; give one label per class", path=path)
        fields.update(output_name=y.name, labels_file=path.name, labels=names)
    return ModelInfo(**fields)
