"""TFLite Metadata: the "TFLITE_METADATA" buffer and the label file packed after the model, as the TFLite Support
library reads them (tflite_support.metadata: MetadataDisplayer, the Task Library, Android Studio's model binding).

The buffer is a ModelMetadata flatbuffer (file identifier "M001") of tensorflow_lite_support's
metadata_schema.fbs; the field slots below are that schema's field ids. An associated file (the labels) is appended
to the .tflite as a zip archive, as MetadataPopulator does with zipfile's append mode, so the flatbuffer still
starts the file and LiteRT ignores the tail. TFLite's MetadataPopulator packs the metadata into an existing file;
mcc writes it with the model, with a fixed zip timestamp so the same model gives the same bytes.

The reader (read_metadata) decodes the fields mcc writes, from the same slot numbers, so mcc's tests check the
writer without tflite_support, whose last release (0.4.4) needs protobuf < 4, which onnx cannot import beside; a
slow test runs tflite_support's MetadataDisplayer and Task Library ImageClassifier on mcc's files apart.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
from flatbuffers.table import Table

from ...errors import MccError
from ..model_info import ModelInfo

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # every field written here is in metadata schema 1.0.0
# union member and enum values of metadata_schema.fbs
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2
NORMALIZATION_OPTIONS = 1
COLOR_RGB, COLOR_GRAYSCALE = 1, 2
TENSOR_AXIS_LABELS = 2
# field ids (vtable slot = 4 + 2 * id; a union takes two ids, its type then its value)
MODEL = {"name": 0, "description": 1, "version": 2, "subgraph_metadata": 3, "min_parser_version": 7}
SUBGRAPH = {"name": 0, "input_tensor_metadata": 2, "output_tensor_metadata": 3}
TENSOR = {"name": 0, "description": 1, "content": 3, "process_units": 4, "associated_files": 6}
CONTENT = {"content_properties_type": 0, "content_properties": 1}
IMAGE = {"color_space": 0}
PROCESS_UNIT = {"options_type": 0, "options": 1}
NORMALIZATION = {"mean": 0, "std": 1}
FILE = {"name": 0, "description": 1, "type": 2}


class _Builder:
    def __init__(self):
        self.b = flatbuffers.Builder(256)

    def table(self, n_fields: int, fields: dict) -> int:
        """A table from {field id: value}: int offsets of strings/tables/vectors, or ("byte", v) for a byte field.
        Offsets must all be created before StartObject, as flatbuffers requires."""
        b = self.b
        b.StartObject(n_fields)
        for fid, v in fields.items():
            if isinstance(v, tuple):
                b.PrependInt8Slot(fid, v[1], 0)
            else:
                b.PrependUOffsetTRelativeSlot(fid, v, 0)
        return b.EndObject()

    def offsets(self, items: list[int]) -> int:
        b = self.b
        b.StartVector(4, len(items), 4)
        for off in reversed(items):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def floats(self, values) -> int:
        b = self.b
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(v)
        return b.EndVector()

    def string(self, s: str) -> int:
        return self.b.CreateString(s)


def _tensor(mb: _Builder, name: str, description: str, content_type: int, color: int | None, units: list[int],
            files: list[int]) -> int:
    props = mb.table(1, {IMAGE["color_space"]: ("byte", color)}) if color else mb.table(0, {})
    content = mb.table(3, {CONTENT["content_properties_type"]: ("byte", content_type),
                           CONTENT["content_properties"]: props})
    fields = {TENSOR["name"]: mb.string(name), TENSOR["description"]: mb.string(description),
              TENSOR["content"]: content}
    if units:
        fields[TENSOR["process_units"]] = mb.offsets(units)
    if files:
        fields[TENSOR["associated_files"]] = mb.offsets(files)
    return mb.table(7, fields)


def metadata_buffer(model_name: str, description: str, inputs: list, outputs: list, names: dict[str, str],
                    info: ModelInfo) -> bytes:
    """The ModelMetadata flatbuffer for a model with `inputs` / `outputs` (IR tensors in SubGraph order): each
    tensor's metadata under its signature name (`names`); the normalization on info.input_name (an image input, 1
    or 3 channels, is described as one, as the Task Library's image classifier expects); the label file on
    info.output_name."""
    for name, tensors in ((info.input_name, inputs), (info.output_name, outputs)):
        if name is not None and name not in {t.name for t in tensors}:
            raise MccError(f"the metadata describes '{name}', which is not among the model's inputs and outputs "
                           f"({', '.join(t.name for t in inputs + outputs)}); a pass renamed it")
    mb = _Builder()
    ins = []
    for t in inputs:
        units, color = [], None
        if t.name == info.input_name:
            norm = mb.table(2, {NORMALIZATION["mean"]: mb.floats(info.mean), NORMALIZATION["std"]: mb.floats(info.std)})
            units = [mb.table(2, {PROCESS_UNIT["options_type"]: ("byte", NORMALIZATION_OPTIONS),
                                  PROCESS_UNIT["options"]: norm})]
            if len(t.shape) == 4 and t.shape[-1] in (1, 3):
                color = COLOR_RGB if t.shape[-1] == 3 else COLOR_GRAYSCALE
        ins.append(_tensor(mb, names[t.name], f"{t.dtype}{list(t.shape)}", IMAGE_PROPERTIES if color else FEATURE_PROPERTIES,
                           color, units, []))
    outs = []
    for t in outputs:
        files = []
        if t.name == info.output_name:
            files = [mb.table(4, {FILE["name"]: mb.string(info.labels_file),
                                  FILE["description"]: mb.string("labels of the last axis, one per line"),
                                  FILE["type"]: ("byte", TENSOR_AXIS_LABELS)})]
        outs.append(_tensor(mb, names[t.name], f"{t.dtype}{list(t.shape)}", FEATURE_PROPERTIES, None, [], files))
    sub = mb.table(7, {SUBGRAPH["name"]: mb.string(model_name), SUBGRAPH["input_tensor_metadata"]: mb.offsets(ins),
                       SUBGRAPH["output_tensor_metadata"]: mb.offsets(outs)})
    root = mb.table(8, {MODEL["name"]: mb.string(model_name), MODEL["description"]: mb.string(description),
                        MODEL["subgraph_metadata"]: mb.offsets([sub]),
                        MODEL["min_parser_version"]: mb.string(MIN_PARSER_VERSION)})
    mb.b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(mb.b.Output())


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """`model` followed by a zip archive of `files` (stored, timestamp 1980-01-01, in the given order)."""
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


# ---- reading ----------------------------------------------------------------------------------------------------
def _field(t: Table, fid: int) -> int:
    return t.Offset(4 + 2 * fid)


def _str(t: Table, fid: int) -> str | None:
    o = _field(t, fid)
    return t.String(o + t.Pos).decode("utf-8") if o else None


def _byte(t: Table, fid: int) -> int:
    o = _field(t, fid)
    return t.Get(flatbuffers.number_types.Int8Flags, o + t.Pos) if o else 0


def _sub(t: Table, fid: int) -> Table | None:
    o = _field(t, fid)
    return Table(t.Bytes, t.Indirect(o + t.Pos)) if o else None


def _tables(t: Table, fid: int) -> list[Table]:
    o = _field(t, fid)
    if not o:
        return []
    start = t.Vector(o)
    return [Table(t.Bytes, t.Indirect(start + 4 * i)) for i in range(t.VectorLen(o))]


def _floats(t: Table, fid: int) -> list[float]:
    o = _field(t, fid)
    if not o:
        return []
    start = t.Vector(o)
    return [t.Get(flatbuffers.number_types.Float32Flags, start + 4 * i) for i in range(t.VectorLen(o))]


def _union(t: Table, type_fid: int) -> tuple[int, Table | None]:
    return _byte(t, type_fid), _sub(t, type_fid + 1)


def _tensor_json(t: Table) -> dict:
    out = {"name": _str(t, TENSOR["name"]), "description": _str(t, TENSOR["description"])}
    content = _sub(t, TENSOR["content"])
    if content is not None:
        kind, props = _union(content, CONTENT["content_properties_type"])
        out["content"] = {FEATURE_PROPERTIES: "FeatureProperties", IMAGE_PROPERTIES: "ImageProperties"}.get(kind, kind)
        if kind == IMAGE_PROPERTIES:
            out["color_space"] = {COLOR_RGB: "RGB", COLOR_GRAYSCALE: "GRAYSCALE"}.get(_byte(props, 0), "UNKNOWN")
    for unit in _tables(t, TENSOR["process_units"]):
        kind, opts = _union(unit, PROCESS_UNIT["options_type"])
        if kind == NORMALIZATION_OPTIONS:
            out["normalization"] = {"mean": _floats(opts, NORMALIZATION["mean"]),
                                    "std": _floats(opts, NORMALIZATION["std"])}
    files = [{"name": _str(f, FILE["name"]), "type": _byte(f, FILE["type"])}
             for f in _tables(t, TENSOR["associated_files"])]
    if files:
        out["associated_files"] = files
    return out


def read_metadata(buf: bytes) -> dict:
    """The fields of a ModelMetadata flatbuffer that mcc writes, as JSON-like data."""
    if not flatbuffers.util.BufferHasIdentifier(buf, 0, FILE_IDENTIFIER):
        raise ValueError(f"not a ModelMetadata flatbuffer (identifier {bytes(buf[4:8])!r}, expected M001)")
    data = bytearray(buf)
    root = Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))
    subs = _tables(root, MODEL["subgraph_metadata"])
    return {"name": _str(root, MODEL["name"]), "description": _str(root, MODEL["description"]),
            "min_parser_version": _str(root, MODEL["min_parser_version"]),
            "subgraphs": [{"name": _str(s, SUBGRAPH["name"]),
                           "inputs": [_tensor_json(t) for t in _tables(s, SUBGRAPH["input_tensor_metadata"])],
                           "outputs": [_tensor_json(t) for t in _tables(s, SUBGRAPH["output_tensor_metadata"])]}
                          for s in subs]}
