"""Read any supported model file into an IR graph, recognising the format by content, never by extension.

torch's three archive kinds are all zip files (`.pt` is used for two of them), so the zip members decide:
`archive_format` marks a torch.export archive, `constants.pkl` plus `code/` a TorchScript archive, a lone
`data.pkl` a torch.save pickle. Every zip archive is CRC-checked before torch sees it, so a truncated or
damaged file is reported as such instead of as whatever torch trips over first (a torch.export archive by its
reader, which reads each member once: frontend/zip_integrity.py). A TFLite flatbuffer carries its
file identifier "TFL3" at bytes 4..8; as a compile source it must be a float model. An ONNX model is a protobuf
ModelProto, which serializers begin with its ir_version field followed by another ModelProto field, so those
first bytes mark one; its reader then parses it and requires a graph.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import MccError, require
from ..ir import Graph
from .zip_integrity import bad_crc, damaged

ACCEPTED = ("a torch.export archive (torch.export.save(torch.export.export(model, example_inputs), 'model.pt2')); "
            "a TorchScript archive (torch.jit.save, loaded with input_shapes); "
            "a pickled nn.Module (torch.save(model), only with trust_pickle=True and input_shapes); "
            "a float TFLite flatbuffer (.tflite); "
            "an ONNX model (opsets 7 to the newest the pinned onnx defines; outside 13-21 converted in memory)")
# The ModelProto field tags that may follow its ir_version (field 1, a varint): fields 2-8, 14, 20, 25 and 26.
_ONNX_SECOND_FIELDS = frozenset(b"\x12\x1a\x22\x28\x32\x3a\x42\x72\xa2\xca\xd2")


def load(path, *, trust_pickle: bool = False, input_shapes: list[tuple[int, ...]] | None = None) -> Graph:
    """Load the model at `path` into an IR graph.

    input_shapes gives one shape per model input for the formats that do not record them (TorchScript,
    pickled modules; a torch.export archive keeps the shapes it was exported with) and for ONNX models with
    symbolic dimensions (a symbolic batch alone becomes 1 without it); trust_pickle allows unpickling (a whole
    nn.Module, the pickled members of a .pt2 archive), which executes code from the file. Without it nothing
    from the file runs: see frontend/pt2_archive.py.
    """
    path = Path(path)
    fmt = sniff(path)
    if input_shapes is not None:
        input_shapes = _check_shapes(path, input_shapes)
    if fmt in ("torch.export", "torchscript", "pickle"):
        require("torch", "torch", f"reading a PyTorch model ({path})")
    if fmt == "torch.export":
        from .pt2_archive import read_pt2
        from .torch_export import lower

        return lower(read_pt2(path, trust_pickle=trust_pickle, light=True), name=path.stem, path=path)
    if fmt == "tflite":
        from ..formats.tflite.reader import read_float_tflite

        return read_float_tflite(path.read_bytes(), path=path)
    if fmt == "onnx":
        from .onnx_loader import load_onnx

        return load_onnx(path, input_shapes)
    if fmt == "torchscript":
        from .torchscript import load_torchscript

        return load_torchscript(path, input_shapes)
    from .pickled import load_pickled

    return load_pickled(path, trust_pickle, input_shapes)


def sniff(path: Path) -> str:
    """'torch.export', 'torchscript', 'pickle', 'tflite' or 'onnx', judged from the bytes; MccError otherwise."""
    if not path.exists():
        raise MccError("no such file", path=path)
    if not path.is_file():
        raise MccError("is not a file", path=path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":  # the flatbuffer file identifier: the most specific test goes first
        return "tflite"
    if len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_SECOND_FIELDS:
        return "onnx"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if head.startswith(b"\x80"):  # pickle protocol 2+: torch.save's pre-1.6 format
        return "pickle"
    shown = repr(head) if head else "nothing (the file is empty)"
    raise MccError(f"is not a model format mcc reads (it starts with {shown}); accepted: {ACCEPTED}", path=path)


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            tails = {n.split("/", 1)[-1] for n in names}
            # a torch.export archive's reader checks each member's CRC itself (frontend/zip_integrity.py)
            bad = None if "archive_format" in tails else z.testzip()
    except Exception as e:  # BadZipFile, EOFError, zlib.error, ... depending on where the damage is
        raise damaged(path, e) from e
    if bad is not None:
        raise bad_crc(path, bad)
    if "archive_format" in tails:
        return "torch.export"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "data.pkl" in tails:
        return "pickle"
    raise MccError(f"is a zip archive but not a PyTorch model archive; accepted: {ACCEPTED}", path=path)


def _check_shapes(path, input_shapes) -> list[tuple[int, ...]]:
    try:
        shapes = [tuple(int(d) for d in s) for s in input_shapes]
    except (TypeError, ValueError):
        shapes = None
    if not shapes or any(not s or min(s) < 1 for s in shapes):
        raise MccError("input_shapes must be a list of shapes of positive sizes, one per input, e.g. "
                       f"[(1, 3, 224, 224)]; got {input_shapes!r}", path=path)
    return shapes
