""".npz / .npy data files: numpy.savez archives (stored and deflated) and lone .npy files, mutated member by member.

An archive is taken apart into (name, bytes, compression) members; a mutation edits an .npy header (dtype strings,
shapes, fortran_order, missing or extra keys, header length, format version, magic), the data (truncated,
extended, an object array's pickle), the member list (renamed, duplicated, removed, a non-.npy member added) or
the rebuilt zip (a wrong CRC, flipped or cut bytes). The target reads the file as mcc's CLI does and matches it to
small model inputs, then slices it into batches: a 0-sample array has to be refused on the way.
"""

from __future__ import annotations

import io
import random
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from mcc.datafiles import match_inputs, read_arrays, run_in_batches
from mcc.ir import Tensor

from mcc.errors import MccError

from .runner import Reader, flip_bytes, interesting_int

MAGIC = b"\x93NUMPY"
DESCRS = ["<f4", "<f8", ">f4", "<f2", "|b1", "<i8", "<i4", "|u1", "|i1", "<u2", "<c8", "<U5", "|S3", "|O", "|V8",
          "<M8[s]", "<m8[ns]", "f4", "float32", "<f16", "<f3", "", "x", "[('a', '<f4')]", "[('a', '<f4', (2,))]",
          "{'names': ['a'], 'formats': ['<f4']}", "('<f4', (2, 2))", "<i4,<f4", "|O8", "O", "<g", "|V0"]
SHAPES = ["()", "(0,)", "(0, 3)", "(2, 3)", "(3,)", "(2, 0, 2)", "(-1,)", "(-2, 3)", "(4294967296,)",
          "(9223372036854775807,)", "(65536, 65536, 65536)", "(2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, "
          "18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34)", "[2, 3]", "(2.0, 3)", "('2',)", "5",
          "None", "(True,)", "(2, (3,))", "(1, 1, 2, 2)", "(4, 1, 2, 2)", "(2, 1, 2, 2)", "(1, 2, 2, 1)"]
FORTRAN = ["False", "True", "0", "1", "'x'", "None", "[]"]


def _npy(array: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, array, allow_pickle=False)
    return f.getvalue()


def build():
    rng = np.random.default_rng(0)
    sets = [
        {"x": rng.standard_normal((2, 3)).astype(np.float32)},
        {"x": rng.standard_normal((4, 1, 2, 2)).astype(np.float32), "y": np.arange(4, dtype=np.int64)},
        {"x": rng.standard_normal((2, 2, 2, 1)).astype(np.float32)},
        {"input": rng.standard_normal(3).astype(np.float64), "x": np.float32(1.5)},
    ]
    return [{k: _npy(np.asarray(v)) for k, v in s.items()} for s in sets]


# ---- .npy members ---------------------------------------------------------------------------------------
def _split_npy(raw: bytes):
    """(version, header text, data) of an .npy member, or None when it is not one."""
    if not raw.startswith(MAGIC) or len(raw) < 10:
        return None
    major, minor = raw[6], raw[7]
    if major == 1:
        n, start = struct.unpack("<H", raw[8:10])[0], 10
    else:
        n, start = struct.unpack("<I", raw[8:12])[0], 12
    return (major, minor), raw[start:start + n].decode("latin1"), raw[start + n:]


def _join_npy(version, header: str, data: bytes, rng: random.Random) -> bytes:
    text = header.encode("latin1", "replace")
    pad = (-(len(text) + 11)) % 64 if rng.random() < 0.8 else rng.randrange(0, 5)
    text = text + b" " * pad + b"\n"
    major, minor = version
    if major == 1 and len(text) < 65536:
        head = MAGIC + bytes([major, minor]) + struct.pack("<H", len(text))
    else:
        head = MAGIC + bytes([major & 0xFF, minor & 0xFF]) + struct.pack("<I", len(text))
    if rng.random() < 0.1:   # a header length that lies
        n = interesting_int(rng, 0, 0xFFFF)
        head = head[:8] + struct.pack("<H", n) + head[10:] if major == 1 else head[:8] + struct.pack("<I", n)
    return head + text + data


def _header(descr: str, fortran: str, shape: str) -> str:
    """An .npy header dict from the source text of its three values."""
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"


_FIELD = re.compile(r"'(descr|fortran_order|shape)': ('[^']*'|\([^)]*\)|[A-Za-z0-9]+)")


def _fields(header: str) -> tuple[str, str, str]:
    """The source text of a header's descr, fortran_order and shape (defaults for those it lacks)."""
    found = dict(_FIELD.findall(header))
    return found.get("descr", "'<f4'"), found.get("fortran_order", "False"), found.get("shape", "(2, 3)")


def mutate_npy(raw: bytes, rng: random.Random) -> bytes:
    parts = _split_npy(raw)
    if parts is None:
        return flip_bytes(raw, rng)
    version, header, data = parts
    descr, fortran, shape = _fields(header)
    choice = rng.randrange(12)
    if choice == 0:
        header = _header(repr(rng.choice(DESCRS)), fortran, shape if rng.random() < 0.5 else rng.choice(SHAPES))
    elif choice == 1:
        shape = rng.choice(SHAPES) if rng.random() < 0.7 else \
            "(" + ", ".join(str(interesting_int(rng, -3, 1 << 40)) for _ in range(rng.randrange(1, 5))) + ",)"
        header = _header(descr, fortran, shape)
    elif choice == 2:
        header = _header(descr, rng.choice(FORTRAN), shape)
    elif choice == 3:   # a key missing, an extra key, or no dict at all
        header = rng.choice([header.replace("'fortran_order': False, ", ""), header.replace("'descr'", "'dtype'"),
                             header[:-1] + "'extra': 1, }", "[1, 2, 3]", "{", "", "{'descr': '<f4'}",
                             "__import__('os').system('true')", "{'descr': '<f4', 'fortran_order': False, "
                             "'shape': (" + "(" * 300 + ")" * 300 + ",)}", header + "\x00\xff"])
    elif choice == 4:
        version = rng.choice([(1, 0), (2, 0), (3, 0), (0, 0), (4, 0), (1, 1), (255, 255)])
    elif choice == 5:   # truncated or extended data
        data = data[:rng.randrange(len(data) + 1)] if rng.random() < 0.6 else data + rng.randbytes(rng.randrange(1, 64))
    elif choice == 6:   # an object array: a pickle where the data goes
        header = _header("'|O'", "False", "(2,)")
        data = b"\x80\x04\x95" + rng.randbytes(20) + b"."
    elif choice == 7:   # 0 samples
        header = _header("'<f4'", "False", rng.choice(["(0, 3)", "(0,)", "(0, 1, 2, 2)", "(0, 2, 2, 1)"]))
        data = b""
    elif choice == 8:
        raw = flip_bytes(raw, rng)
        return raw
    elif choice == 9:   # the magic or the version bytes damaged
        raw = bytearray(raw)
        raw[rng.randrange(8)] = rng.randrange(256)
        return bytes(raw)
    elif choice == 10:  # a consistent header for another dtype/shape (data size may or may not match)
        descr = rng.choice(["<f4", "<f8", "<i8", "|b1", "<f2", "|u1", ">f4", "<c8", "<U1"])
        shape = rng.choice(["(2, 3)", "(3, 2)", "(6,)", "(1, 2, 3)", "(2, 1, 2, 2)", "(2, 2, 2, 1)"])
        header = _header(repr(descr), rng.choice(["False", "True"]), shape)
    else:
        return raw[:rng.randrange(len(raw) + 1)]
    return _join_npy(version, header, data, rng)


# ---- archives -------------------------------------------------------------------------------------------
def _zip(members, compression: int) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression) as z:
        for name, raw in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), raw, compress_type=compression)
    return f.getvalue()


def _damage_crc(data: bytes, rng: random.Random) -> bytes:
    """Change a member's stored CRC-32 (local header and/or central directory) or one byte of its data."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile:
        return flip_bytes(data, rng)
    if not infos:
        return data
    info = rng.choice(infos)
    out = bytearray(data)
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", out[local + 26:local + 30])
    if rng.random() < 0.5 and info.compress_size:
        k = local + 30 + name_len + extra_len + rng.randrange(info.compress_size)
        out[k] ^= 1 << rng.randrange(8)
    else:
        crc = struct.pack("<I", rng.getrandbits(32))
        out[local + 14:local + 18] = crc
        central = data.find(b"PK\x01\x02" + data[local + 4:local + 6])
        while central >= 0:
            if struct.unpack("<I", out[central + 42:central + 46])[0] == local:
                out[central + 16:central + 20] = crc
                break
            central = data.find(b"PK\x01\x02", central + 4)
    return bytes(out)


NAMES = ["x.npy", "y.npy", "x", "x.npy.npy", "a/x.npy", "../x.npy", "/x.npy", "", ".npy", "x.NPY", "\u00e9.npy",
         "d/", "x.npy\x00", "input.npy"]


def generate(seeds, rng: random.Random) -> bytes:
    chosen = rng.choice(seeds)
    members = [(f"{k}.npy", raw) for k, raw in chosen.items()]
    if rng.random() < 0.15:   # a lone .npy file
        raw = members[0][1]
        for _ in range(rng.randrange(1, 3)):
            raw = mutate_npy(raw, rng)
        return raw
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        choice = rng.randrange(8)
        k = rng.randrange(len(members)) if members else None
        if k is None:
            members.append(("x.npy", _npy(np.zeros((1, 3), np.float32))))
        elif choice <= 3:
            members[k] = (members[k][0], mutate_npy(members[k][1], rng))
        elif choice == 4:
            members[k] = (rng.choice(NAMES), members[k][1])
        elif choice == 5:
            members.append(rng.choice(members) if rng.random() < 0.5 else
                           (rng.choice(NAMES), rng.choice([b"", b"hello", rng.randbytes(40), MAGIC, _zip([], 0)])))
        elif choice == 6:
            del members[k]
        else:
            rng.shuffle(members)
    data = _zip(members, rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    after = rng.random()
    if after < 0.12:
        data = _damage_crc(data, rng)
    elif after < 0.2:
        data = flip_bytes(data, rng)
    elif after < 0.25:
        data = data[:rng.randrange(len(data) + 1)]
    return data


# What the data is matched to: a float model's inputs, one NCHW/NHWC image input, an integer input.
INPUT_SETS = [
    [Tensor("x", (1, 3))],
    [Tensor("x", (1, 2, 2, 1), layout="NHWC"), Tensor("y", (1,), "int64")],
    [Tensor("input", (1, 3), "int32")],
]


def read_and_match(data: bytes, path: Path) -> None:
    """read_arrays, then match_inputs against each input set and run_in_batches over what matched."""
    arrays = read_arrays(path)
    for inputs in INPUT_SETS:
        try:
            feeds, _ = match_inputs(arrays, inputs, path=path)
        except MccError:
            continue
        run_in_batches(lambda f: f, feeds, 1)


READER = Reader("npz", ".npz", build, generate, (("read_arrays+match_inputs", read_and_match),))
