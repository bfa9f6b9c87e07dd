"""Every crash the fuzzers (tests/fuzz) found, as a test: the bad input built here, MccError naming the problem.

Each case says what the reader raised before it was fixed (the fuzzer's signature: exception type at the
innermost mcc frame)."""

import io
import struct
import zipfile

import numpy as np
import pytest

from mcc.datafiles import match_inputs, read_arrays, run_in_batches
from mcc.errors import MccError
from mcc.ir import Tensor


# ---- .npz / .npy (mcc.datafiles) ------------------------------------------------------------------------
def npy(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy file from the text of its header dict and its data bytes (padded as numpy pads)."""
    text = header.encode("latin1")
    text += b" " * ((-(len(text) + 11)) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text + data


def header(descr="'<f4'", shape="(2, 3)", fortran="False") -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"


def npz(tmp_path, members: dict, compression=zipfile.ZIP_STORED, name="data.npz"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression) as z:
        for member, raw in members.items():
            z.writestr(member, raw)
    return path


def good_npy(shape=(2, 3)) -> bytes:
    f = io.BytesIO()
    np.save(f, np.ones(shape, np.float32))
    return f.getvalue()


def read_error(path) -> str:
    with pytest.raises(MccError) as e:
        read_arrays(path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_truncated_member(tmp_path):
    """ValueError at datafiles.py (np.load read members lazily, outside the try): 'EOF: reading array data'."""
    path = npz(tmp_path, {"x.npy": good_npy()[:-5]})
    msg = read_error(path)
    assert "member 'x.npy'" in msg and "truncated" in msg and "24 bytes" in msg


def test_member_longer_than_its_header_says(tmp_path):
    path = npz(tmp_path, {"x.npy": good_npy() + b"\x00" * 8})
    assert "holds 32" in read_error(path)


def test_bad_crc(tmp_path):
    """BadZipFile (Bad CRC-32) at datafiles.py when the member was first read."""
    path = npz(tmp_path, {"x.npy": good_npy()})
    data = bytearray(path.read_bytes())
    data[-30 - 22 - 5] ^= 1   # a byte of the member's data (before the central directory of one member)
    path.write_bytes(bytes(data))
    msg = read_error(path)
    assert "member 'x.npy' is damaged" in msg and "CRC" in msg


def test_bad_local_header(tmp_path):
    """BadZipFile (Bad magic number for file header) and OSError (Invalid argument): damaged member offsets."""
    path = npz(tmp_path, {"x.npy": good_npy()})
    data = bytearray(path.read_bytes())
    data[0:4] = b"PK\x00\x00"
    path.write_bytes(bytes(data))
    assert "member 'x.npy' is damaged" in read_error(path)


def test_bad_deflate_stream(tmp_path):
    """zlib.error at datafiles.py: a deflated member whose stream is damaged."""
    path = npz(tmp_path, {"x.npy": good_npy((64, 64))}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    start = info.header_offset + 30 + len(info.filename)
    data[start + 5:start + 25] = bytes(range(20))
    path.write_bytes(bytes(data))
    assert "member 'x.npy' is damaged" in read_error(path)


def test_encrypted_or_unsupported_member(tmp_path):
    """RuntimeError (File is encrypted) and NotImplementedError (zip version / compressed patched data)."""
    path = npz(tmp_path, {"x.npy": good_npy()})
    data = bytearray(path.read_bytes())
    data[6] |= 1                                   # the local header's "encrypted" flag
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 1                         # and the central directory's
    path.write_bytes(bytes(data))
    assert "member 'x.npy' is damaged" in read_error(path)
    data[6] &= ~1
    data[central + 8] &= ~1
    data[central + 6] = 255                        # "version needed to extract" 25.5
    path.write_bytes(bytes(data))
    assert "zip file version 25.5" in read_error(path)


def test_member_that_is_not_an_array(tmp_path):
    """AttributeError ('bytes' object has no attribute 'ndim') in match_inputs: np.load returns such a member as
    bytes."""
    path = npz(tmp_path, {"x": b"hello"})
    assert "member 'x' is not a .npy array" in read_error(path)


def test_two_arrays_of_one_name(tmp_path):
    path = npz(tmp_path, {"x.npy": good_npy(), "x": good_npy()})
    assert "two arrays named 'x'" in read_error(path)


@pytest.mark.parametrize("text, what", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, ", "TokenError"),     # TokenError at datafiles.py
    ("{'descr': '<f4', 'fortran_order': False, 'shape': ('2',), }", "shape is not valid"),
    ("[1, 2, 3]", "not a dictionary"),
    ("{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }", "descr"),
])
def test_damaged_header(tmp_path, text, what):
    path = npz(tmp_path, {"x.npy": npy(text, bytes(8))})
    msg = read_error(path)
    assert "member 'x.npy' has a damaged .npy header" in msg and what in msg
    (tmp_path / "x.npy").write_bytes(npy(text, bytes(8)))
    assert "the array has a damaged .npy header" in read_error(tmp_path / "x.npy")


def test_huge_shape_is_not_allocated(tmp_path):
    """MemoryError at datafiles.py: np.load allocated the 2 PiB the header claims before reading the data."""
    bad = npy(header("'<f8'", "(281474976710656,)"), bytes(16))
    (tmp_path / "x.npy").write_bytes(bad)
    for path in (npz(tmp_path, {"x.npy": bad}), tmp_path / "x.npy"):
        assert "2,251,799,813,685,248 bytes of data, but holds 16" in read_error(path)


def test_bool_and_negative_shapes(tmp_path):
    """TypeError (an integer is required) at datafiles.py: numpy's header check lets a shape of (True,) through."""
    for shape in ("(True,)", "(-1,)", "(-2, 3)"):
        path = npz(tmp_path, {"x.npy": npy(header(shape=shape), bytes(4))})
        assert "impossible shape" in read_error(path)


def test_object_array(tmp_path):
    """ValueError (Object arrays cannot be loaded when allow_pickle=False) when the member was first read."""
    path = npz(tmp_path, {"x.npy": npy(header("'|O'", "(2,)"), b"\x80\x04\x95" + bytes(20) + b".")})
    assert "Python objects" in read_error(path)
    (tmp_path / "x.npy").write_bytes(npy(header("'|O'", "(2,)"), b"\x80\x04."))
    assert "Python objects" in read_error(tmp_path / "x.npy")


@pytest.mark.parametrize("descr", ["'<U5'", "'|S3'", "[('f0', '<i4'), ('f1', '<f4')]", "'<c8'", "'<M8[s]'"])
def test_non_numeric_dtypes(tmp_path, descr):
    """ValueError (invalid literal for int()), SystemError (invalid maximum character passed to PyUnicode_New) and
    TypeError (Cannot cast array data from dtype([('f0', '<i4'), ('f1', '<f4')])) at match_inputs' astype."""
    itemsize = np.lib.format.descr_to_dtype(eval(descr)).itemsize
    path = npz(tmp_path, {"input.npy": npy(header(descr, "(1, 3)"), b"\xff" * 3 * itemsize)})
    assert "mcc reads numeric arrays" in read_error(path)
    with pytest.raises(MccError, match="array 'input' is dtype"):
        match_inputs({"input": np.zeros((1, 3), np.dtype(np.lib.format.descr_to_dtype(eval(descr))))},
                     [Tensor("input", (1, 3), "int32")])


def test_npy_version_3_and_unknown(tmp_path):
    for version in ((3, 0), (9, 9)):
        path = npz(tmp_path, {"x.npy": npy(header(), bytes(24), version)})
        assert "format version" in read_error(path)


def test_zero_samples(tmp_path):
    """IndexError at run_in_batches (parts[0] of no parts): an array with batch 0 matched a model input."""
    path = npz(tmp_path, {"x.npy": npy(header(shape="(0, 3)"))})
    arrays = read_arrays(path)
    with pytest.raises(MccError, match=r"array 'x' holds no samples \(shape \[0, 3\]\)"):
        match_inputs(arrays, [Tensor("x", (1, 3))], path=path)
    with pytest.raises(MccError, match="no samples"):
        run_in_batches(lambda f: f, {"x": np.zeros((0, 3), np.float32)}, 1)


def test_not_a_data_file(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"\x80\x04K\x01.")
    assert "is not a .npz or .npy file" in read_error(tmp_path / "d.npz")
    (tmp_path / "e.npz").write_bytes(b"PK\x03\x04" + bytes(10))
    assert "damaged .npz (zip) archive" in read_error(tmp_path / "e.npz")


def test_good_files_still_read(tmp_path):
    """What numpy writes reads back identically: stored and deflated archives, .npy, Fortran order, big-endian."""
    arrays = {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "f": np.asfortranarray(np.eye(3)),
              "b": np.arange(5, dtype=">i4"), "s": np.float16(2.5), "e": np.zeros((0,), np.int8)}
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for name in ("a.npz", "c.npz"):
        got = read_arrays(tmp_path / name)
        assert sorted(got) == sorted(arrays)
        for k, v in arrays.items():
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
        got["x"][0, 0, 0] = 5   # writable, as np.load's arrays are
    np.save(tmp_path / "f.npy", arrays["f"])
    assert np.array_equal(read_arrays(tmp_path / "f.npy")[""], arrays["f"])
