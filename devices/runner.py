"""What runs on the device: `python -m mcc.devices.runner JOB_DIR`, with mcc's base install only (no torch).

The host and the board run this same module on the same files (the host in a local job folder, the board in one a
transport filled), so a difference between their results is the machine's, never the harness's. JOB_DIR holds
job.json ({"model", "inputs", "tasks", "rules", "threads", "runs", "warmup"}), the model and the inputs; the runner
writes back machine.json (devices.host.describe()), and per task:
  tensors   tensors.npz: every operator output of LiteRT's ref and default kernels (or onnxruntime's ort-all) and of mcc's
            runtime under the rule set that matches each, all samples, keyed "ENGINE/tensor"
  validate  validate.json: `mcc validate`'s report made on the device (mcc vs its peer, there)
  bench     bench.json: latency and peak memory per engine and thread count, each measured in a fresh process
            (`--bench-one`) so that its peak resident set is its own

onnxruntime is not part of the base install: for .onnx files its engines run where it is installed, and are
reported as missing elsewhere.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = {"tflite": ("litert-ref", "litert-default", "mcc-ref", "mcc-default"),
           "onnx": ("onnxruntime", "mcc-onnxruntime")}
PEER_KERNELS = {"litert-ref": "ref", "litert-default": "default", "onnxruntime": "ort-all"}
BENCH_ENGINES = {"tflite": ("litert", "mcc"), "onnx": ("onnxruntime", "mcc")}
# how this Python starts another of itself: the emulated board (devices/qemu.py) names its qemu and interpreter, so
# that no binfmt_misc registration is needed for the benchmarks' fresh processes
PYTHON = json.loads(os.environ["MCC_DEVICE_PYTHON"]) if "MCC_DEVICE_PYTHON" in os.environ else [sys.executable]


def _load(job_dir: Path):
    from ..validate import read_compiled

    job = json.loads((job_dir / "job.json").read_text())
    data, fmt, graph = read_compiled(job_dir / job["model"])
    return job, data, fmt, graph


def _batches(job: dict, job_dir: Path, graph) -> list[dict[str, np.ndarray]]:
    """The job's inputs cut into model batches; without inputs, one batch of seeded random values (bench only)."""
    from ..datafiles import match_inputs, read_arrays

    if job.get("inputs"):
        feeds, _ = match_inputs(read_arrays(job_dir / job["inputs"]), graph.inputs)
    else:
        rng = np.random.default_rng(0)
        feeds = {t.name: (rng.integers(-128, 128, t.shape).astype(t.dtype) if np.dtype(t.dtype).kind in "iu"
                          else rng.standard_normal(t.shape).astype(t.dtype)) for t in graph.inputs}
    b, n = graph.inputs[0].shape[0], len(next(iter(feeds.values())))
    return [{k: v[i:i + b] for k, v in feeds.items()} for i in range(0, n - n % b, b)]


MIRRORS = {"mcc-ref": "ref", "mcc-default": "default", "mcc-onnxruntime": "onnxruntime"}  # profile rules keys


def _rules(job: dict, engine: str) -> str:
    """The runtime rule set an mcc engine uses: the device profile's for the peer kernel set it mirrors."""
    from ..validate import RULES_FOR_KERNELS

    key = MIRRORS[engine]
    return job.get("rules", {}).get(key) or RULES_FOR_KERNELS["ort-all" if key == "onnxruntime" else key]


def tensors(job, data, fmt, graph, batches) -> dict[str, np.ndarray]:
    from ..runtime import run
    from ..validate import peer_runner

    # operator outputs only: not constants (the same file's bytes), nor LiteRT's unnamed scratch tensors
    produced = {o.name for n in graph.nodes for o in n.outputs}
    out: dict[str, list] = {}
    for engine in ENGINES[fmt]:
        if engine.startswith("mcc"):
            rules = _rules(job, engine)
            step = lambda feeds: run(graph, feeds, keep_all=True, rules=rules)  # noqa: E731
        else:
            try:
                step = peer_runner(data, PEER_KERNELS[engine])
            except Exception as e:  # onnxruntime absent from a base install: say so in the results
                out.setdefault(f"{engine}/__missing__", []).append(np.array(str(e)))
                continue
        for feeds in batches:
            for name, value in step(feeds).items():
                if name in produced:
                    out.setdefault(f"{engine}/{name}", []).append(np.asarray(value))
    return {k: np.concatenate(v) if v[0].ndim else np.stack(v) for k, v in out.items()}


def bench_one(job_dir: Path, engine: str, threads: int) -> dict:
    """Latency of `engine` at `threads` threads on one batch: warm-up runs, then `runs` timed ones; the peak
    resident set while the engine is built and runs (Linux's VmHWM, reset after the imports through
    /proc/self/clear_refs, so import-time spikes do not mask it), and the resident set it started from."""
    job, data, fmt, graph = _load(job_dir)
    feeds = _batches(job, job_dir, graph)[0]
    base = _peak_reset()
    if engine == "litert":
        from ai_edge_litert.interpreter import Interpreter

        from ..runtime.litert import native_stderr_silenced

        with native_stderr_silenced():
            interp = Interpreter(model_content=data, num_threads=threads)
            interp.allocate_tensors()

        def step():
            for d in interp.get_input_details():
                interp.set_tensor(d["index"], feeds[d["name"]])
            interp.invoke()
    elif engine == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        step = lambda: session.run(None, feeds)  # noqa: E731
    else:
        import numba

        from ..runtime import run

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        rules = _rules(job, "mcc-default" if fmt == "tflite" else "mcc-onnxruntime")
        step = lambda: run(graph, feeds, rules=rules)  # noqa: E731
    for _ in range(job.get("warmup", 3)):
        step()
    times = []
    for _ in range(job.get("runs", 20)):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ms = np.array(times) * 1e3
    return {"engine": engine, "threads": threads, "runs": len(times), "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "peak_rss_bytes": peak, "rss_before_bytes": base}


def _status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_reset() -> int | None:
    """The current resident set, with the peak reset to it where the kernel allows (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status("VmRSS")


def bench(job_dir: Path, job: dict, fmt: str) -> list[dict]:
    rows = []
    for engine in BENCH_ENGINES[fmt]:
        for t in job.get("threads", [1]):
            p = subprocess.run([*PYTHON, "-m", "mcc.devices.runner", "--bench-one", str(job_dir), engine,
                                str(t)], capture_output=True, text=True)
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else
                        {"engine": engine, "threads": t, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
    return rows


def main(argv: list[str]) -> int:
    if argv[0] == "--bench-one":
        print(json.dumps(bench_one(Path(argv[1]), argv[2], int(argv[3]))))
        return 0
    from .host import describe

    job_dir = Path(argv[0])
    job, data, fmt, graph = _load(job_dir)
    (job_dir / "machine.json").write_text(json.dumps(describe()))
    if "tensors" in job["tasks"]:
        np.savez_compressed(job_dir / "tensors.npz", **tensors(job, data, fmt, graph, _batches(job, job_dir, graph)))
    if "validate" in job["tasks"]:
        from ..validate import validate

        kernels = ("ref", "default") if fmt == "tflite" else ("ort-all",)
        try:
            report = validate(job_dir / job["model"], job_dir / job["inputs"], kernels=kernels, rules=job["rules"])
        except Exception as e:  # onnxruntime absent on the board: the board-vs-host comparisons still stand
            report = {"error": f"{type(e).__name__}: {e}"}
        (job_dir / "validate.json").write_text(json.dumps(report))
    if "bench" in job["tasks"]:
        (job_dir / "bench.json").write_text(json.dumps(bench(job_dir, job, fmt)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
