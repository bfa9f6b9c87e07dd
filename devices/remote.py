"""`mcc validate --device/--host` and `mcc bench`: run devices/runner.py on a device and on this host, compare.

The same job (model, inputs, the device profile's rule sets) runs through a transport (devices/transport.py) on
the device and through LocalTransport here; the results come back as files. validate_on_device reports per tensor
the differing elements of LiteRT-device vs LiteRT-host (ref and default kernels), mcc-device vs mcc-host (under
each rule set), and mcc vs LiteRT on the device (validate's report, made there). Integer tensors must match
exactly; float tensors within validate's FLOAT_TOLERANCE of their range.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..errors import MccError
from ..validate import FLOAT_TOLERANCE, describe, read_compiled
from .profiles import get_profile, latency_estimate_s, profiles
from .transport import LocalTransport, SshTransport

ENGINE_NAMES = {"litert-ref": "LiteRT ref kernels", "litert-default": "LiteRT default kernels (XNNPACK)",
                "mcc-ref": "mcc runtime (LiteRT ref rules)", "mcc-default": "mcc runtime (XNNPACK rules)",
                "onnxruntime": "onnxruntime (ort-all)", "mcc-onnxruntime": "mcc runtime (onnxruntime rules)"}
RESULTS = {"tensors": "tensors.npz", "validate": "validate.json", "bench": "bench.json"}


def transport_for(device: str | None, host: str | None, python: str = "python3", ssh_config: str | None = None,
                  remote_dir: str | None = None, cpu: str | None = None, rebuild: bool = False, progress=None):
    """The transport that reaches `device`: --host means SSH; qemu-arm64 the emulated arm64 sysroot
    (devices/qemu.py) under the CPU model `cpu` (a board or a qemu model; `rebuild`: build its sysroot afresh); no
    device, or one reached locally, this machine."""
    if host:
        return SshTransport(host, python=python, ssh_config=ssh_config, remote_dir=remote_dir)
    if device == "qemu-arm64":
        from .qemu import QemuTransport

        return QemuTransport(cpu, rebuild, progress)
    if device is None or "local" in get_profile(device)["reach"]:
        return LocalTransport()
    how = ", ".join(get_profile(device)["reach"]) or "nothing: it is a size and arena check only"
    raise MccError(f"device '{device}' is reached by {how}: add --host user@host for a real board, or use "
                   f"--device qemu-arm64 for an emulated arm64 Linux")


def run_job(transport, model: Path, inputs: Path | None, tasks: list[str], out: Path, rules: dict,
            threads=(1,), runs: int = 20, warmup: int = 3, timeout: float = 3600) -> dict:
    """Put the job on the device, run the runner, get its results into `out`; returns machine.json's facts."""
    try:
        python = transport.prepare()
        transport.put(model, "model" + model.suffix)
        job = {"model": "model" + model.suffix, "inputs": "inputs.npz" if inputs else None, "tasks": tasks,
               "rules": rules, "threads": list(threads), "runs": runs, "warmup": warmup}
        if inputs:
            transport.put(inputs, "inputs.npz")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(job, f)
        transport.put(Path(f.name), "job.json")
        Path(f.name).unlink()
        p = transport.run([*python, "-m", "mcc.devices.runner", "."], timeout)
        if p.returncode != 0:
            raise MccError(f"the runner failed on {transport.name} (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
        out.mkdir(parents=True, exist_ok=True)
        for name in ["machine.json", *(RESULTS[t] for t in tasks)]:
            transport.get(name, out / name)
        return json.loads((out / "machine.json").read_text())
    finally:
        transport.close()


def _inputs_npz(inputs, tmp: Path) -> Path:
    """The inputs as one .npz (what the runner reads), whatever form `read_arrays` accepts."""
    from ..datafiles import read_arrays

    path = tmp / "inputs.npz"
    np.savez(path, **read_arrays(inputs))
    return path


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        return max(a.size, b.size)
    if a.dtype.kind == "f":
        span = float(np.nanmax(np.abs(a))) if a.size else 0.0
        return int(np.count_nonzero(~np.isclose(a, b, rtol=0, atol=FLOAT_TOLERANCE * max(span, 1e-30),
                                                equal_nan=True)))
    return int(np.count_nonzero(a != b))


def compare_runs(board: dict[str, np.ndarray], host: dict[str, np.ndarray]) -> list[dict]:
    """Per engine, per tensor: differing elements between the device's and the host's arrays."""
    engines: dict[str, list] = {}
    for key, value in board.items():
        engine, tensor = key.split("/", 1)
        if tensor == "__missing__" or key not in host:
            continue
        engines.setdefault(engine, []).append({"tensor": tensor, "differing": _diff(value, host[key]),
                                               "elements": int(value.size)})
    return [{"engine": e, "name": ENGINE_NAMES[e], "tensors": rows, "differing": sum(r["differing"] for r in rows),
             "elements": sum(r["elements"] for r in rows)} for e, rows in engines.items()]


def validate_on_device(model, inputs, device: str | None, host: str | None, python: str = "python3",
                       ssh_config: str | None = None, remote_dir: str | None = None, progress=None,
                       cpu: str | None = None, rebuild: bool = False) -> dict:
    model = Path(model)
    read_compiled(model)  # refuse a file that is not a compiled model before touching the board
    profile = get_profile(device) if device in profiles() else None
    board = transport_for(device, host, python, ssh_config, remote_dir, cpu, rebuild, progress)
    rules = profile["rules"] if profile else getattr(board, "rules", {})  # qemu-arm64: its emulated board's
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = _inputs_npz(inputs, tmp)
        if progress:
            progress.say(f"running on {board.name}")
        board_machine = run_job(board, model, npz, ["tensors", "validate"], tmp / "board", rules)
        if progress:
            progress.say("running on this host")
        host_machine = run_job(LocalTransport(), model, npz, ["tensors"], tmp / "host", rules)
        with np.load(tmp / "board" / "tensors.npz") as b, np.load(tmp / "host" / "tensors.npz") as h:
            board_tensors, host_tensors = dict(b), dict(h)
        on_board = json.loads((tmp / "board" / "validate.json").read_text())
    missing = [k.split("/")[0] for k in board_tensors if k.endswith("/__missing__")]
    across = compare_runs(board_tensors, host_tensors)
    ok = all(c["differing"] == 0 for c in across) and on_board.get("ok", False)
    return {"model": str(model), "inputs": str(inputs), "device": device, "via": board.name,
            "board": board_machine, "host": host_machine, "board_vs_host": across, "on_board": on_board,
            "missing_on_board": missing, "ok": ok}


def format_device_report(r: dict) -> str:
    b, h = r["board"], r["host"]
    lines = [f"{r['model']} on {r['inputs']}: {r['via']} ({b['isa']}, {b['cpu']}, {b['cores']} cores) vs this host "
             f"({h['isa']}, {h['cpu']})"]
    for c in r["board_vs_host"]:
        lines.append(f"  {c['name']}, device vs host: {c['differing']:,} of {c['elements']:,} elements differ "
                     f"in {len(c['tensors'])} tensors")
        lines.extend(f"    {t['tensor']}: {t['differing']:,} of {t['elements']:,}" for t in c["tensors"]
                     if t["differing"])
    for e in r["missing_on_board"]:
        lines.append(f"  {ENGINE_NAMES[e]}: not installed on the device, not compared")
    v = r["on_board"]
    if "error" in v:
        lines.append(f"  mcc vs its peer on the device: not run ({v['error']})")
    for c in v.get("comparisons", []):
        lines.append(f"  mcc runtime (rules {c['rules']}) vs {describe(c['kernels'])} on the device: "
                     f"{c['differing']:,} of {c['elements']:,} elements differ")
    lines.append("OK: the device computes the host's bits" if r["ok"] else "FAILED: a comparison differs")
    return "\n".join(lines)


def bench_on_device(model, inputs, device: str | None, host: str | None, threads=(1,), runs: int = 20,
                    warmup: int = 3, python: str = "python3", ssh_config: str | None = None,
                    remote_dir: str | None = None, cpu: str | None = None) -> dict:
    from ..ir.stats import totals

    model = Path(model)
    graph = read_compiled(model)[2]
    macs = totals(graph)["macs"]
    where = transport_for(device, host, python, ssh_config, remote_dir, cpu)
    profile = get_profile(device) if device in profiles() else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = _inputs_npz(inputs, tmp) if inputs else None
        machine = run_job(where, model, npz, ["bench"], tmp / "out",
                          profile["rules"] if profile else getattr(where, "rules", {}),  # qemu: its board's
                          threads, runs, warmup)
        rows = json.loads((tmp / "out" / "bench.json").read_text())
    estimates = {t: latency_estimate_s(profile, macs, t) * 1e3 for t in threads} if profile else {}
    return {"model": str(model), "device": device, "via": where.name, "machine": machine, "macs": macs,
            "batch": graph.inputs[0].shape[0], "rows": rows, "estimate_ms": estimates,
            "emulated": device == "qemu-arm64"}


def format_bench(r: dict) -> str:
    m = r["machine"]
    lines = [f"{r['model']}: {r['macs']:,} MACs per batch of {r['batch']}; on {r['via']} ({m['isa']}, {m['cpu']}, "
             f"{m['cores']} cores)"]
    if r["emulated"]:
        lines.append("note: emulated timings (qemu) are not device timings: they show the code runs, not how fast")
    lines.append(f"  {'engine':<12} {'threads':>7} {'median ms':>10} {'p90 ms':>9} {'min ms':>9} {'max ms':>9} "
                 f"{'peak MiB':>9} {'+MiB':>7}")
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"  {row['engine']:<12} {row['threads']:>7} failed: {row['error']}")
            continue
        grew = (row["peak_rss_bytes"] - row["rss_before_bytes"]) / 2**20 if row["rss_before_bytes"] else float("nan")
        lines.append(f"  {row['engine']:<12} {row['threads']:>7} {row['median_ms']:>10.3f} {row['p90_ms']:>9.3f} "
                     f"{row['min_ms']:>9.3f} {row['max_ms']:>9.3f} {row['peak_rss_bytes'] / 2**20:>9.1f} "
                     f"{grew:>7.1f}")
    lines.append("  (runs after warm-up, one batch each; peak MiB: the process's peak resident set while the engine "
                 "is built and runs, +MiB: above where it started)")
    for t, ms in r["estimate_ms"].items():
        lines.append(f"  estimate for {r['device']} at {t} thread(s): {ms:.3f} ms (MACs / the profile's MAC rate: "
                     "an estimate, not a measurement)")
    return "\n".join(lines)
