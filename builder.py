"""`mcc build`: compile every entry of an mcc.toml, skipping those whose inputs have not changed.

An entry (one model for one target) is up to date when the sha256 of everything its output depends on — the model
file, the calibration data, the labels file, the normalised options, the target, the emits and the device profile,
mcc's version and the versions of the libraries whose arithmetic or serialisation reaches the bytes — equals the
key recorded after its last build, and every output still has the sha256 recorded then. The record lives in
`<output_dir>/.mcc-cache/<stem>.json`, so deleting the output folder is a clean build. Content hashes, not file
times as make and CMake use: a touched but unchanged file, a fresh clone or a CI cache restore costs a hash, not
a compile, and what is skipped is exactly what would come out the same.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

from . import __version__
from .errors import MccError
from .fileio import sha256, write_atomic
from .progress import Progress
from .project import FILE_ARGUMENTS, Job, load_project
from .report_html import render_html

# Libraries whose arithmetic or serialisation reaches the emitted bytes: torch's export and decompositions, onnx's
# version converter and protobuf writer, flatbuffers' builder, numpy's and numba's float arithmetic in calibration.
BYTE_CHANGING_LIBRARIES = ("numpy", "numba", "onnx", "flatbuffers", "torch", "onnxscript")
CACHE_DIR = ".mcc-cache"


class MemoryCheckError(MccError):
    """The model compiled but does not fit the device of its entry: a result failure (exit 1), as a validation."""

    exit_code = 1


def library_versions() -> dict:
    versions = {}
    for name in BYTE_CHANGING_LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(job: Job) -> str:
    """sha256 of everything the entry's outputs depend on (the module docstring), as canonical JSON."""
    from .devices.profiles import get_profile

    labels = (job.preprocess or {}).get("labels")
    content = {
        "mcc": __version__, "libraries": library_versions(), "target": job.target, "stem": job.stem,
        "source": _file_hash(job.source), "calib": _file_hash(job.calib) if job.calib else None,
        "labels": _file_hash(job.root / labels) if labels else None,
        "compile": {k: v for k, v in job.compile_kwargs.items() if k not in FILE_ARGUMENTS}, "passes": job.pass_options, "preprocess": job.preprocess,
        "emit": sorted(job.emit), "device": get_profile(job.device) if job.device else None,
        "files": {k: _file_hash(Path(job.compile_kwargs[k])) for k in FILE_ARGUMENTS if k in job.compile_kwargs},
    }
    return sha256(json.dumps(content, sort_keys=True).encode())


def _record_path(job: Job) -> Path:
    return job.output_dir / CACHE_DIR / f"{job.stem}.json"


def _up_to_date(job: Job, key: str) -> dict | None:
    """The cache record when the entry's key matches and every output it lists is still the file it wrote."""
    try:
        record = json.loads(_record_path(job).read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    for name, digest in record["outputs"].items():
        path = job.output_dir / name
        if not path.is_file() or _file_hash(path) != digest:
            return None
    return record


def _file_metadata(job: Job) -> dict | None:
    """[model.preprocess] as compile_model's `metadata`: normalization and the label file go into the model file
    (TFLite Metadata, ONNX metadata_props) as well as into the metadata JSON."""
    pre = job.preprocess or {}
    meta = {}
    if "mean" in pre or "std" in pre:
        meta["normalization"] = {k: pre[k] for k in ("mean", "std") if k in pre}
    if "labels" in pre:
        meta["labels"] = str(job.root / pre["labels"])
    return meta or None


def _compile(job: Job, progress: Progress) -> tuple[dict[str, bytes], dict, dict]:
    """(output file name -> bytes, the metadata, the compile report) for one entry; raises MccError."""
    from .artifacts import arena_estimate, c_header, c_source, metadata, metadata_bytes
    from .compiler import compile_model
    from .devices.profiles import get_profile, memory_check
    from .targets import get_target
    from .validate import read_model_bytes

    target = get_target(job.target)
    result = compile_model(job.source, job.target, None, calib=job.calib, options=job.pass_options,
                           progress=progress, metadata=_file_metadata(job), **job.compile_kwargs)
    data = result.data
    arena = arena_estimate(read_model_bytes(data, target.backend, None))  # the graph as the file holds it
    memory = memory_check(get_profile(job.device), len(data), arena) if job.device else None
    model_file = job.stem + target.suffix
    meta = metadata(result.report, {"stem": job.stem, "source_rel": job.rel(job.source), "model_file": model_file,
                                    "preprocess": job.preprocess}, arena, memory)
    result.report["build"] = {"arena_bytes_estimate": arena, "memory_check": memory}
    if memory is not None:  # the HTML report's device memory section
        result.report["memory"] = {"device": job.device, "arena_bytes_estimate": arena, "model_bytes": len(data),
                                   **{k: v for k, v in memory.items() if not isinstance(v, (list, dict))}}
    if memory is not None and not memory["fits"]:
        raise MemoryCheckError(f"model {job.name!r} ({job.target}) does not fit device '{job.device}': "
                               f"{'; '.join(memory['problems'])}. Nothing written for it: compress the model "
                               "(int8, pruning) or choose a larger device")
    files = {model_file: data, f"{job.stem}.json": metadata_bytes(meta)}
    if "c-array" in job.emit:
        origin = f"{job.rel(job.source)} ({job.target})"
        files[f"{job.stem}.h"] = c_header(job.stem, data, arena, origin)
        files[f"{job.stem}.c"] = c_source(job.stem, data, origin)
    return files, meta, result.report


def build(project_path, *, force: bool = False, progress: Progress | None = None, say=None) -> dict:
    """Build every entry of the project; the summary (what --json prints). `say(entry)` is called as each entry
    finishes. An entry's bad input or failed check is recorded in its summary entry and the build goes on with the
    next one; the summary's exit_code is the worst of them (0 done, 1 a fidelity or memory check failed, 2 bad
    input)."""
    progress = progress or Progress(False)
    jobs = load_project(project_path)
    entries = []
    for job in jobs:
        start = time.perf_counter()
        entry = {"name": job.name, "target": job.target, "stem": job.stem, "output_dir": job.rel(job.output_dir)}
        try:
            key = cache_key(job)
            record = None if force else _up_to_date(job, key)
            if record is not None:
                entry.update(status="up to date", outputs=_outputs(job, record["outputs"]),
                             arena_bytes_estimate=record["arena_bytes_estimate"],
                             memory_check=record["memory_check"])
            else:
                files, meta, report = _compile(job, progress)
                job.output_dir.mkdir(parents=True, exist_ok=True)
                for name, data in files.items():
                    write_atomic(job.output_dir / name, data)
                report_path = job.output_dir / f"{job.stem}.report.json"
                write_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode())
                # like the JSON report (it shows pass timings), not a cached, byte-reproducible output
                html_path = report_path.with_suffix("").with_suffix(".html")
                write_atomic(html_path, render_html(report).encode())
                digests = {name: sha256(data) for name, data in files.items()}
                (job.output_dir / CACHE_DIR).mkdir(exist_ok=True)
                write_atomic(_record_path(job), (json.dumps(
                    {"key": key, "outputs": digests, "arena_bytes_estimate": meta["arena_bytes_estimate"],
                     "memory_check": meta["memory_check"]}, indent=2) + "\n").encode())
                entry.update(status="compiled", outputs=_outputs(job, digests), report=job.rel(report_path),
                             html=job.rel(html_path),
                             arena_bytes_estimate=meta["arena_bytes_estimate"], memory_check=meta["memory_check"],
                             warnings=report["warnings"])
                if "fidelity" in report:
                    entry["sqnr_db"] = {k: o["sqnr_db"] for k, o in report["fidelity"]["outputs"].items()}
        except MccError as e:
            entry.update(status="failed", error=str(e), exit_code=e.exit_code)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        entries.append(entry)
        if say is not None:
            say(entry)
    count = {s: sum(e["status"] == s for e in entries) for s in ("compiled", "up to date", "failed")}
    return {"project": str(project_path), "mcc_version": __version__, "entries": entries,
            "compiled": count["compiled"], "skipped": count["up to date"], "failed": count["failed"],
            "exit_code": max((e.get("exit_code", 0) for e in entries), default=0)}


def _outputs(job: Job, digests: dict) -> list[dict]:
    return [{"path": job.rel(job.output_dir / name), "bytes": (job.output_dir / name).stat().st_size,
             "sha256": digest} for name, digest in digests.items()]


def format_entry(entry: dict) -> str:
    """One line per entry for the terminal."""
    head = f"{entry['name']} ({entry['target']}): "
    if entry["status"] == "failed":
        return head + "FAILED: " + entry["error"]
    if entry["status"] == "up to date":
        return head + "up to date"
    files = ", ".join(f"{o['path']} ({o['bytes']:,} bytes)" for o in entry["outputs"])
    line = head + f"compiled in {entry['seconds']:.1f} s -> {files}; arena estimate " \
                  f"{entry['arena_bytes_estimate']:,} bytes"
    for name, db in entry.get("sqnr_db", {}).items():
        line += f"; output '{name}' SQNR {'inf' if db is None else f'{db:.2f}'} dB against the float model"
    m = entry["memory_check"]
    if m is not None:
        line += f"; fits {m['device']} (RAM {m['ram_needed']:,} of {m['ram_bytes']:,} bytes)"
    return line


def format_summary(summary: dict) -> str:
    n = len(summary["entries"])
    return (f"{n} {'entry' if n == 1 else 'entries'}: {summary['compiled']} compiled, {summary['skipped']} up to date, "
            f"{summary['failed']} failed")
