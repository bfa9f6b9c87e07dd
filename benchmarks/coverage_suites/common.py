"""What every suite shares: the four target columns, cases and cells, and the two ways a cell is judged.

A float column compiles the source (through mcc.onnx_backend or compile_model), runs the EMITTED file in its peer
(LiteRT, onnxruntime) and compares with the suite's expected outputs under the suite's own judge. An int8 column
compiles with calibration data, requires `mcc validate`'s claim (0 differing elements between mcc's runtime and
LiteRT's reference and XNNPACK kernels, or onnxruntime at two optimisation levels) and shows the SQNR of the
deployed file's outputs against the float reference. Any MccError is a refusal, recorded with its message; any
other exception is a crash, recorded with its type and message.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mcc.errors import MccError

COLUMNS = ("arm-fp32", "arm-int8", "x86-fp32", "x86-int8")
HEADERS = {"arm-fp32": "fp32 TFLite (arm-fp32)", "arm-int8": "int8 TFLite (arm-int8)",
           "x86-fp32": "fp32 ONNX (x86-fp32)", "x86-int8": "int8 ONNX (x86-int8)"}
STATUSES = ("pass", "refused", "wrong", "crash")
MAX_TEXT = 300


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    source: str          # the source format, as the table shows it
    payload: Any         # what the suite's runner needs (picklable: it travels to a worker process)


@dataclass(frozen=True)
class Cell:
    status: str          # one of STATUSES, or "n/a"
    text: str


def first_line(text: str) -> str:
    """The first line, capped at MAX_TEXT characters, without the machine's install prefix of library paths."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"(?<![\w.-])/\S*/site-packages/", "", line)
    return line if len(line) <= MAX_TEXT else line[:MAX_TEXT - 1] + "…"


def refusal(e: MccError) -> Cell:
    """mcc's message without the path prefix (a private temporary file, or the model the row already names)."""
    message = str(e)
    if e.path and message.startswith(f"{e.path}: "):
        message = message[len(e.path) + 2:]
    return Cell("refused", first_line(message))


def guarded(column: str, work: Callable[[], Cell]) -> tuple[str, Cell]:
    """(column, the cell `work` returns), a refusal for an MccError, a crash for anything else."""
    try:
        return column, work()
    except MccError as e:
        return column, refusal(e)
    except Exception as e:  # a crash is a result the table records, not the end of the run
        return column, Cell("crash", first_line(f"{type(e).__name__}: {e}"))


def not_applicable(columns, why: str) -> Iterator[tuple[str, Cell]]:
    for c in columns:
        yield c, Cell("n/a", why)


# ---- judging float outputs ----

def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / (max(ref) - min(ref)) over the finite elements (an error where ref is constant is
    measured against 1); NaN or infinity where only one of them has one counts as infinite error."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.size == 0:
        return 0.0
    same_special = (np.isnan(out) & np.isnan(ref)) | (np.isinf(ref) & (out == ref))
    finite = np.isfinite(ref) & np.isfinite(out)
    if not (same_special | finite).all():
        return float("inf")
    if not finite.any():
        return 0.0
    span = float(ref[finite].max() - ref[finite].min()) or 1.0
    return float(np.abs(out[finite] - ref[finite]).max()) / span


def mismatch(outs, refs) -> str | None:
    """Why `outs` cannot be compared with `refs` element by element (count, shape, dtype), or None."""
    if len(outs) != len(refs):
        return f"{len(outs)} outputs, expected {len(refs)}"
    for i, (o, r) in enumerate(zip(outs, refs)):
        if np.shape(o) != np.shape(r):
            return f"output {i} has shape {list(np.shape(o))}, expected {list(np.shape(r))}"
        if np.asarray(o).dtype != np.asarray(r).dtype:
            return f"output {i} is {np.asarray(o).dtype}, expected {np.asarray(r).dtype}"
    return None


def allclose_judge(rtol: float, atol: float):
    """The ONNX backend tests' own criterion (numpy.testing.assert_allclose: |out - ref| <= atol + rtol |ref|,
    NaN equal to NaN), with max|err| / range shown."""
    def judge(outs, refs) -> Cell:
        bad = mismatch(outs, refs)
        if bad:
            return Cell("wrong", bad)
        ok = all(np.allclose(np.asarray(o, np.float64), np.asarray(r, np.float64), rtol=rtol, atol=atol,
                             equal_nan=True) if np.asarray(r).dtype.kind in "fc"
                 else np.array_equal(o, r) for o, r in zip(outs, refs))
        err = max(relative_error(o, r) for o, r in zip(outs, refs))
        return Cell("pass" if ok else "wrong", f"{err:.1e}" + ("" if ok else f" (rtol {rtol:g}, atol {atol:g})"))
    return judge


def range_judge(tolerance: float = 1e-4):
    """max|err| / output range within `tolerance` for every output (the float criterion of mcc's own tests)."""
    def judge(outs, refs) -> Cell:
        bad = mismatch(outs, refs)
        if bad:
            return Cell("wrong", bad)
        err = max(relative_error(o, r) for o, r in zip(outs, refs))
        ok = err <= tolerance
        return Cell("pass" if ok else "wrong", f"{err:.1e}" + ("" if ok else f" (> {tolerance:g})"))
    return judge


def float_cell(rep, data_sets, judge) -> Cell:
    """Run every (inputs, expected outputs) data set through the prepared `rep`; the worst judged cell."""
    worst = None
    for inputs, expected in data_sets:
        cell = judge(list(rep.run(inputs)), list(expected))
        if worst is None or (cell.status != "pass" and worst.status == "pass"):
            worst = cell
    return worst


# ---- judging int8 files ----

def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.1f}k" if n >= 10_000 else f"{n:,}"


def int8_cell(rep, samples: list[list[np.ndarray]], expected: list[list[np.ndarray]], input_names) -> Cell:
    """Validate the int8 file of `rep` on `samples` (each a list of input arrays in the source's layout, one model
    batch) with mcc validate's kernel sets; pass = 0 differing elements in every comparison. SQNR of the deployed
    file's outputs against `expected` (the float reference) is shown beside."""
    from mcc.validate import fidelity, validate

    with tempfile.TemporaryDirectory(prefix="mcc-coverage-") as folder:
        model = Path(folder) / f"model{rep.target.suffix}"
        model.write_bytes(rep.result.data)
        data = Path(folder) / "samples.npz"
        np.savez(data, **{name: np.concatenate([s[i] for s in samples]) for i, name in enumerate(input_names)})
        report = validate(model, data)
    comparisons = report["comparisons"]
    differing = sum(c["differing"] for c in comparisons)
    elements = max(c["elements"] for c in comparisons)
    outs = [list(rep.run(s)) for s in samples]
    reference = {str(i): np.concatenate([e[i] for e in expected]) for i in range(len(expected[0]))}
    produced = {str(i): np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))}
    sqnr = min(f["sqnr_db"] for f in fidelity(reference, produced).values())
    floats = [str(op) for r in rep.result.report["passes"] for op in r["notes"].get("float_ops", [])]
    islands = f"; {len(floats)} float op(s)" if floats else ""
    if differing == 0:
        return Cell("pass", f"0 of {_count(elements)} differ; SQNR {sqnr:.1f} dB{islands}")
    first = next(c for c in comparisons if c["differing"])
    f = first["first_differing_op"]
    return Cell("wrong", f"{_count(first['differing'])} of {_count(first['elements'])} differ vs {first['kernels']} "
                         f"(first: {f['op']} '{f['node']}'); SQNR {sqnr:.1f} dB{islands}")
