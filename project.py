"""The project file `mcc.toml`: which models `mcc build` compiles, for which targets, with which options.

    [[model]]
    name = "net"                  # a C identifier: the output files' stem and the C array's name
    source = "net.pt2"
    targets = ["arm-int8"]        # or target = "arm-int8"
    calib = "calib.npz"
    output_dir = "build"          # default "build"; paths are relative to mcc.toml
    emit = ["c-array"]            # optional
    device = "cortex-m7"          # optional: memory check against devices/profiles/
    [model.options]               # compile_model's keyword arguments and the target pipeline's pass options
    observer = "mse"
    [model.preprocess]            # optional, recorded in the metadata JSON: mean, std, labels
    mean = [0.5]

`options` is not a list of known keys: a key is valid when compile_model takes it as a keyword argument or a pass
of every target's pipeline declares it (passes/manager.py), with that argument's or option's type, so options
that new passes add join the project file without a change here. tomllib reports no lines for values, so each
error finds its key's line in the text and names it.
"""

from __future__ import annotations

import inspect
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MccError

DEFAULT_OUTPUT_DIR = "build"
EMITS = ("c-array",)
# compile_model's parameters that a project entry fills from its own keys, not from `options`
# set by the entry itself: its files, [model.preprocess] (-> metadata) and the HTML report written beside the model
_ENTRY_PARAMETERS = {"source", "target_name", "output", "report_path", "calib", "options", "progress", "metadata",
                     "html_path"}
# compile_model arguments that name a data file: resolved against the project folder, and hashed into the cache key
FILE_ARGUMENTS = ("finetune", "eval_data")
_ENTRY_PASS_OPTIONS = {"calibration"}  # filled from the entry's `calib`
_MODEL_KEYS = {"name": str, "source": str, "target": str, "targets": list, "calib": str, "output_dir": str,
               "emit": list, "device": str, "options": dict, "preprocess": dict}
_PREPROCESS_KEYS = {"mean": list, "std": list, "labels": str}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class Job:
    """One model compiled for one target: what `mcc build` compiles, caches and reports as an entry."""
    name: str
    target: str
    stem: str  # output files' stem and the C array's symbol
    source: Path
    calib: Path | None
    output_dir: Path
    emit: tuple[str, ...]
    device: str | None
    compile_kwargs: dict
    pass_options: dict
    preprocess: dict | None
    line: int  # the [[model]] header's line, for messages
    root: Path = field(repr=False, default=Path("."))

    def rel(self, path: Path) -> str:
        """`path` relative to the project folder where it lies inside it (what summaries and metadata show)."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)


class _Lines:
    """Line numbers of keys in the project file's text: tomllib parses values only."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.sections: list[tuple[int, str | None, int]] = []  # (model index, sub-table or None, first line)
        model = -1
        for i, line in enumerate(self.lines, 1):
            s = line.strip()
            if re.match(r"\[\[\s*model\s*\]\]", s):
                model += 1
                self.sections.append((model, None, i))
            elif m := re.match(r"\[\s*model\s*\.\s*(\w+)\s*\]", s):
                self.sections.append((model, m.group(1), i))
            elif s.startswith("["):
                self.sections.append((-1, None, i))

    def model_line(self, index: int) -> int:
        return next((ln for m, t, ln in self.sections if m == index and t is None), 1)

    def find(self, index: int, key: str, table: str | None = None) -> int:
        """The line of `key` in model `index` (in its sub-table `table`), or of the section it belongs in."""
        bounds = [ln for _, _, ln in self.sections] + [len(self.lines) + 1]
        key_re = re.compile(rf"""^\s*(["']?){re.escape(key)}\1\s*=""")
        nested = re.compile(rf"""(^|[{{,.\s])(["']?){re.escape(key)}\2\s*=""")
        for n, (m, t, start) in enumerate(self.sections):
            if m != index:
                continue
            span = range(start + 1, bounds[n + 1])
            for ln in span:
                text = self.lines[ln - 1].split("#", 1)[0]
                if table == t and key_re.search(text):
                    return ln
                if table is not None and t is None and re.match(rf"\s*{re.escape(table)}\b", text) \
                        and nested.search(text):
                    return ln  # dotted key (options.observer = ...) or inline table (options = {observer = ...})
        return next((ln for m, t, ln in self.sections if m == index and t == table), self.model_line(index))


def _type_name(t) -> str:
    return {str: "a string", list: "an array", dict: "a table", int: "an integer", float: "a number",
            bool: "true or false"}.get(t, str(t))


def compile_parameters() -> dict[str, object]:
    """compile_model's keyword arguments a project entry may set, with their type hints (None: any value)."""
    from .compiler import compile_model

    hints = typing.get_type_hints(compile_model)
    return {name: hints.get(name) for name in inspect.signature(compile_model).parameters
            if name not in _ENTRY_PARAMETERS}


def pass_option_hints(target: str) -> dict[str, object]:
    """The pass options the target's pipeline declares, with their type hints."""
    from .passes import PASSES
    from .targets import get_target

    hints = {}
    for name in get_target(target).pipeline:
        spec = PASSES[name]
        if spec.options is not None:
            hints.update(typing.get_type_hints(spec.options))
    return {k: v for k, v in hints.items() if k not in _ENTRY_PASS_OPTIONS}


def _from_toml(value, hint):
    """TOML has arrays only: an array becomes a tuple, set or frozenset where the declared type is one."""
    if not isinstance(value, list) or hint is None:
        return value
    kinds = [typing.get_origin(h) or h for h in (typing.get_args(hint) if typing.get_origin(hint) in
                                                  (typing.Union, types.UnionType) else (hint,))]
    if list in kinds:
        return value
    for kind in (tuple, frozenset, set):
        if kind in kinds:
            return kind(value)
    return value


def load_project(path) -> list[Job]:
    """Read and validate `path`; one Job per model and target, in file order. Every problem is an MccError naming
    the file, the line and the key."""
    from .devices.profiles import get_profile
    from .passes.manager import _describe, _matches
    from .targets import get_target

    path = Path(path)
    if not path.is_file():
        raise MccError("no such project file; write one with `mcc init` or give its path with --project", path=path)
    text = path.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MccError(f"is not valid TOML: {e}", path=path) from None
    lines = _Lines(text)

    def fail(index: int, key: str | None, message: str, table: str | None = None):
        line = lines.find(index, key, table) if key else lines.model_line(index)
        raise MccError(f"line {line}: {message}", path=path)

    unknown = sorted(set(doc) - {"model"})
    if unknown:
        raise MccError(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; an mcc.toml holds [[model]] "
                       "tables", path=path)
    models = doc.get("model")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise MccError("has no [[model]] tables; add one (`mcc init` writes a commented example)", path=path)
    root = path.parent
    params = compile_parameters()
    jobs: list[Job] = []
    for index, m in enumerate(models):
        label = f"model {m.get('name', index + 1)!r}"
        for key, value in m.items():
            if key not in _MODEL_KEYS:
                fail(index, key, f"{label}: unknown key '{key}'; a [[model]] takes {', '.join(_MODEL_KEYS)}")
            if not isinstance(value, _MODEL_KEYS[key]):
                fail(index, key, f"{label}: '{key}' must be {_type_name(_MODEL_KEYS[key])}, got {value!r}")
        for key in ("name", "source"):
            if key not in m:
                fail(index, None, f"{label}: missing key '{key}'")
        if not _IDENTIFIER.match(m["name"]):
            fail(index, "name", f"{label}: name must be a C identifier (letters, digits, _; not starting with a "
                 "digit): it names the output files and the C array")
        if ("target" in m) == ("targets" in m):
            fail(index, None, f"{label}: give exactly one of 'target' (a string) or 'targets' (an array)")
        targets = [m["target"]] if "target" in m else m["targets"]
        target_key = "target" if "target" in m else "targets"
        if not targets or not all(isinstance(t, str) for t in targets) or len(set(targets)) != len(targets):
            fail(index, target_key, f"{label}: 'targets' must list one or more different targets, as strings")
        for t in targets:
            try:
                get_target(t)
            except MccError as e:
                fail(index, target_key, f"{label}: {e}")
        emit = m.get("emit", [])
        for e in emit:
            if e not in EMITS:
                fail(index, "emit", f"{label}: unknown emit {e!r}; known: {', '.join(EMITS)}")
        if "device" in m:
            try:
                get_profile(m["device"])
            except MccError as e:
                fail(index, "device", f"{label}: {e}")
        preprocess = m.get("preprocess")
        for key, value in (preprocess or {}).items():
            if key not in _PREPROCESS_KEYS:
                fail(index, key, f"{label}: unknown preprocess key '{key}'; known: {', '.join(_PREPROCESS_KEYS)}",
                     "preprocess")
            if not isinstance(value, _PREPROCESS_KEYS[key]) or (
                    key in ("mean", "std") and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in value)):
                fail(index, key, f"{label}: preprocess '{key}' must be "
                     f"{'an array of numbers' if key != 'labels' else 'a string (a file path)'}, got {value!r}",
                     "preprocess")
        if preprocess and "labels" in preprocess:
            labels = root / preprocess["labels"]
            if not labels.is_file():
                fail(index, "labels", f"{label}: labels file '{preprocess['labels']}' does not exist "
                     "(relative to the project file)", "preprocess")
        kwargs, pass_options = {}, {}
        for key, value in m.get("options", {}).items():
            if key in params:
                hint = params[key]
                value = _from_toml(value, hint)
                if hint is not None and not _matches(value, hint):
                    fail(index, key, f"{label}: option '{key}' must be {_describe(hint)}, got {value!r}", "options")
                if key in FILE_ARGUMENTS:
                    if not isinstance(value, str) or not (root / value).is_file():
                        fail(index, key, f"{label}: option '{key}' names a data file; '{value}' does not exist "
                             "(paths are relative to the project file)", "options")
                    value = str(root / value)
                kwargs[key] = value
                continue
            for t in targets:
                hints = pass_option_hints(t)
                if key not in hints:
                    fail(index, key, f"{label}: option '{key}' is neither an argument of compile_model "
                         f"({', '.join(params)}) nor an option of a pass of target {t}'s pipeline "
                         f"({', '.join(sorted(hints)) or 'none'})", "options")
                value = _from_toml(value, hints[key])
                if not _matches(value, hints[key]):
                    fail(index, key, f"{label}: option '{key}' must be {_describe(hints[key])}, got {value!r}",
                         "options")
            pass_options[key] = value
        source = root / m["source"]
        calib = root / m["calib"] if "calib" in m else None
        for key, p in (("source", source), ("calib", calib)):
            if p is not None and not p.is_file():
                fail(index, key, f"{label}: {key} file '{m[key]}' does not exist (paths are relative to the "
                     "project file)")
        for t in targets:
            jobs.append(Job(name=m["name"], target=t,
                            stem=m["name"] if len(targets) == 1 else f"{m['name']}_{t.replace('-', '_')}",
                            source=source, calib=calib, output_dir=root / m.get("output_dir", DEFAULT_OUTPUT_DIR),
                            emit=tuple(emit), device=m.get("device"), compile_kwargs=kwargs,
                            pass_options=pass_options, preprocess=preprocess, line=lines.model_line(index),
                            root=root))
    seen: dict[tuple, Job] = {}
    for job in jobs:
        where = (job.output_dir.resolve(), job.stem)
        if where in seen:
            raise MccError(f"line {job.line}: model {job.name!r} ({job.target}) writes {job.stem}.* into the same "
                           f"folder as the model on line {seen[where].line}; give them different names or "
                           "output_dir", path=path)
        seen[where] = job
    return jobs


# ---- mcc init ---------------------------------------------------------------------------------------------------
MODEL_SUFFIXES = (".pt2", ".onnx", ".tflite", ".pt")


def init_text(model: Path | None, folder: Path) -> str:
    """A commented starting mcc.toml for `model` (a path relative to `folder`) or, without one, for the only model
    file in `folder`; calibration data named like the model (NAME*.npz / .npy) makes the target arm-int8."""
    from .devices.profiles import profiles
    from .targets import TARGETS

    if model is None:
        found = sorted(p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES and p.is_file())
        model = found[0] if len(found) == 1 else None
    name = re.sub(r"\W", "_", model.stem) if model is not None else "model"
    name = name if _IDENTIFIER.match(name) else f"m_{name}"
    source = model.name if model is not None else "model.pt2"
    calib = sorted(p.name for p in folder.glob(f"{model.stem}*") if p.suffix in (".npz", ".npy")) if model else []
    target = "arm-int8" if calib else "arm-fp32"
    calib_line = (f'calib = "{calib[0]}"' if calib else '# calib = "calib.npz"').ljust(32)
    source_note = "" if model is not None else "   <- your model file"
    return f"""# mcc.toml: the models `mcc build` compiles. Paths are relative to this file.
# `mcc build` compiles every [[model]] for each of its targets into output_dir and skips those whose model file,
# data, options and mcc version are unchanged since the last build (`mcc build --force` rebuilds them).
# Exit codes: 0 done, 1 a fidelity or memory check failed, 2 bad input (this file, a model, data).

[[model]]
name = "{name}"{' ' * max(1, 23 - len(name))}# a C identifier: outputs are <output_dir>/{name}.* ({name}_<target>.* with several targets)
source = "{source}"{' ' * max(1, 21 - len(source))}# .pt2 (torch.export), .pt (TorchScript: set options.input_shapes), .onnx, float .tflite{source_note}
target = "{target}"{' ' * max(1, 21 - len(target))}# or targets = ["arm-int8", "x86-int8"]; see `mcc targets`: {', '.join(TARGETS)}
{calib_line}# int8 targets: calibration samples, one array per model input, batch first
output_dir = "{DEFAULT_OUTPUT_DIR}"
# emit = ["c-array"]           # also <name>.c and <name>.h: the model as an aligned C array for TFLite Micro
# device = "cortex-m7"         # check model and arena size against a device: {', '.join(profiles())}

[model.options]                # mcc compile's options and the target's pass options, by name
# observer = "mse"             # activation ranges: mse, minmax, percentile, percentile:P
# io = "int8"                  # int8 model inputs and outputs instead of float
# require_int8 = true          # fail if an op would stay float
# min_sqnr = 20.0              # fail (exit 1) when an output's SQNR against the float model is below this (dB)

# [model.preprocess]           # what the app must do to inputs; recorded in <name>.json
# mean = [0.485, 0.456, 0.406]
# std = [0.229, 0.224, 0.225]
# labels = "labels.txt"
"""
