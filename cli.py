"""The `mcc` command line: compile, run, inspect, validate, analyze, targets.

One error path: a problem with the user's input or files is an MccError (an OSError on a file the user named is
turned into one), printed as one paragraph with exit code 2; anything else is a bug in mcc, reported in two lines
with the traceback saved to a file (exit 3), never as a raw traceback. Libraries' log lines and warnings are
kept off stderr while a command runs: mcc says what matters in its own words.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from . import __version__
from .errors import MccError, describe_os_error, quiet_libraries, save_traceback
from .progress import Progress


def _shapes(text: str | None):
    if not text:
        return None
    try:
        shapes = [tuple(int(d) for d in part.split(",")) for part in text.split(";")]
    except ValueError:
        raise MccError(f"--input-shape '{text}' is not of the form 1,3,224,224 (';' between several inputs)") from None
    if any(d < 1 for s in shapes for d in s):
        raise MccError(f"--input-shape '{text}' has a size below 1; every dimension is a positive size, "
                       "e.g. 1,3,224,224")
    return shapes


def _default_output(model: str, target_name: str) -> str:
    """The model's name with the target's suffix; NAME.TARGET.SUFFIX when that would be the model itself."""
    from .targets import get_target

    suffix = get_target(target_name).suffix
    out = Path(model).with_suffix(suffix)
    return str(out if out != Path(model) else out.with_suffix(f".{target_name}{suffix}"))


_INPUT_FILES = {"model": "model", "calib": "calibration data", "input": "input data", "reference": "reference model",
                "labels": "label", "report_json": "report",
                "finetune": "fine-tuning data", "data": "sensitivity data"}


def _check_input_files(args) -> None:
    """Every file the command reads exists, is a file and can be read, checked before any work: a --calib problem
    would otherwise show only after the model has loaded. A dangling symbolic link is named as one."""
    for attr, what in _INPUT_FILES.items():
        path = getattr(args, attr, None)
        if path is None:
            continue
        if os.path.islink(path) and not os.path.exists(path):
            raise MccError(f"is a symbolic link to '{os.readlink(path)}', which does not exist (a dangling link); "
                           f"give the {what} file's path", path=path)
        if not os.path.lexists(path):
            raise MccError(f"no such {what} file; check the path", path=path)
        if os.path.isdir(path):
            raise MccError(f"is a folder, not a file; give the {what} file's path", path=path)
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # an OSError (permission denied) names the file


def _check_int8_options(args) -> None:
    """Refuse, before any work, int8 options on a float target and an observer that does not exist."""
    from .targets import get_target

    target = get_target(args.target)
    if not target.needs_calibration:
        given = [flag for flag, on in (("--io int8", args.io == "int8"), ("--require-int8", args.require_int8),
                                       ("--fallback", getattr(args, "fallback", None)),
                                       ("--min-sqnr", args.min_sqnr is not None)) if on]
        if given:
            raise MccError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to int8 targets, "
                           f"and target {target.name} emits "
                           f"{target.number_format}: choose an int8 target (arm-int8, x86-int8) or drop "
                           f"{' and '.join(given)}")
    if args.observer is not None:
        from .passes.observers import make_observer

        make_observer(args.observer)


def _cmd_compile(args) -> None:
    from .compiler import compile_model
    from .ir.stats import format_table

    _check_int8_options(args)
    if args.fallback_sqnr is not None and args.fallback is None:
        raise MccError("--fallback-sqnr is the target of --fallback: add --fallback float, or drop --fallback-sqnr")
    out = args.output or _default_output(args.model, args.target)
    profile = None
    if args.device:
        from .devices.profiles import get_profile

        profile = get_profile(args.device)  # an unknown device is refused before any work
    progress = Progress(not args.quiet)
    options = {"observer": args.observer, "io": args.io, "require_int8": args.require_int8,
               "bias_correction": args.bias_correction, "cle": args.cle, "epochs": args.epochs,
               "finetune_lr": args.finetune_lr, "temperature": args.temperature,
               **_compression_options(args)}
    options.update(_prune_options(args))
    options.update(_binary_options(args))
    result = compile_model(args.model, args.target, out, trust_pickle=args.trust_pickle,
                           input_shapes=_shapes(args.input_shape), report_path=args.report, calib=args.calib,
                           options={k: v for k, v in options.items() if v is not None}, progress=progress,
                           fallback=args.fallback, fallback_sqnr=args.fallback_sqnr, min_sqnr=args.min_sqnr,
                           metadata=_metadata(args), html_path=args.html, finetune=args.finetune,
                           eval_data=args.eval_data)
    for w in result.report["warnings"]:
        print(f"mcc: warning: {w}", file=sys.stderr)
    if not args.quiet:
        print(format_table(result.graph))
        src, dst = result.report["source"]["totals"], result.report["output"]["totals"]
        print(f"\n{args.model} -> {out} ({args.target}): {len(result.data):,} bytes; "
              f"params {src['params']:,} -> {dst['params']:,}; MACs {src['macs']:,} -> {dst['macs']:,}")
        for kind in ("inputs", "outputs"):
            for t in result.report["output"][kind]:
                q = t.get("quantization")
                print(f"{kind[:-1]:<6} {t['name']}: {t['dtype']}{t['shape']}"
                      + (f" ({t['layout']})" if t["layout"] else "")
                      + (f" scale {q['scale'][0]:.6g} zero point {q['zero_point'][0]}" if q else ""))
        origin = result.report["source"]["origin"]
        if "converted_to_opset" in origin:
            print(f"source: ONNX opset {origin['onnx_opset']}, converted in memory to opset "
                  f"{origin['converted_to_opset']} by onnx's version converter (the file is unchanged)")
        for note in origin.get("notes", []):
            print(f"source: {note}")
        _print_compression(result.report)
        for r in result.report["passes"]:
            if r["notes"].get("float_ops"):
                print(f"left in float by {r['pass']}: {', '.join(map(str, r['notes']['float_ops']))}")
        if "finetune" in result.report:
            print(_format_finetune(result.report["finetune"]))
        if "fallback" in result.report:
            from .analyze import format_fallback

            print(format_fallback(result.report["fallback"]))
        if "compression" in result.report:
            print("\n".join(_format_compression(result.report["compression"], result.report.get("pruning"))))
        if "fidelity" in result.report:
            print(_format_guard(result.report["fidelity"]))
        if args.report:
            print(f"report written to {args.report}")
    if profile:
        _device_fit(profile, result, args.quiet)


def _device_fit(profile: dict, result, quiet: bool) -> None:
    """compile --device: the compiled file and its arena estimate against the board's memory; a warning (not a
    refusal: the estimate is a lower bound and the user may know better) when they do not fit."""
    from .artifacts import arena_estimate
    from .devices.profiles import memory_check

    m = memory_check(profile, len(result.data), arena_estimate(result.graph))
    if not m["fits"]:
        print(f"mcc: warning: the model will not fit {profile['name']}: {'; '.join(m['problems'])}", file=sys.stderr)
    elif not quiet:
        print(f"fits {profile['name']}: {m['ram_needed']:,} of {m['ram_bytes']:,} bytes of RAM "
              f"(model {m['model_bytes']:,} + arena estimate {m['arena_bytes']:,})"
              if m["flash_bytes"] is None else
              f"fits {profile['name']}: arena estimate {m['arena_bytes']:,} of {m['ram_bytes']:,} bytes of RAM, "
              f"model {m['model_bytes']:,} of {m['flash_bytes']:,} bytes of flash")


def _cmd_bench(args) -> None:
    import json

    from .devices.remote import bench_on_device, format_bench

    try:
        threads = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        raise MccError(f"--threads takes thread counts separated by commas, e.g. 1,4; got '{args.threads}'") from None
    if min(threads) < 1 or args.runs < 1 or args.warmup < 0:
        raise MccError("--threads and --runs take counts of at least 1, --warmup at least 0")
    r = bench_on_device(args.model, args.input, args.device, args.host, threads, args.runs, args.warmup,
                        args.python, args.ssh_config, args.remote_dir, args.cpu)
    print(json.dumps(r, indent=2) if args.json else format_bench(r))


def _device_options(sp) -> None:
    sp.add_argument("--device", help="a board of `mcc devices` (its rule sets and figures), or qemu-arm64")
    sp.add_argument("--host", metavar="USER@HOST", help="run on this board over ssh (key login, as `ssh USER@HOST` "
                    "does it): mcc installs its base install into a venv there")
    sp.add_argument("--python", default="python3", help="the board's Python 3.11 (default python3)")
    sp.add_argument("--ssh-config", metavar="FILE", help="ssh configuration file to use (ssh -F)")
    sp.add_argument("--remote-dir", metavar="DIR", help="folder on the board for mcc's venv and job folders "
                    "(default ~/.cache/mcc-device)")
    sp.add_argument("--cpu", help="with --device qemu-arm64, the CPU qemu emulates: a board of `mcc devices` (its "
                    "CPU model and rule sets; default rpi4: a Cortex-A72, NEON without the dot product) or a qemu CPU "
                    "model (cortex-a53, cortex-a72, cortex-a76, max)")


def _cmd_devices(args) -> None:
    from .devices.profiles import format_devices

    print(format_devices())


# ---- embedded metadata and the HTML report (issue 20) -----------------------------------------------------------
def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise MccError(f"{flag} '{text}' is not a comma-separated list of numbers, e.g. 127.5 or 0.485,0.456,0.406")


def _metadata(args) -> dict:
    """compile_model's `metadata` from --labels, --norm-mean and --norm-std (both or neither)."""
    mean, std = _floats(args.norm_mean, "--norm-mean"), _floats(args.norm_std, "--norm-std")
    if (mean is None) != (std is None):
        raise MccError("--norm-mean and --norm-std describe (x - mean) / std together: give both, or neither")
    return {**({"normalization": {"mean": mean, "std": std}} if mean is not None else {}),
            **({"labels": args.labels} if args.labels is not None else {})}


def _cmd_report(args) -> None:
    import json

    from .fileio import check_output_path, write_atomic
    from .report_html import render_html

    out = args.output or str(Path(args.report_json).with_suffix(".html"))
    check_output_path(out)
    try:
        report = json.loads(Path(args.report_json).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MccError(f"is not a JSON compile report ({e}); give the file `mcc compile --report` wrote",
                       path=args.report_json) from None
    missing = [k for k in ("target", "source", "output", "passes", "layers") if not isinstance(report, dict)
               or k not in report]
    if missing:
        raise MccError(f"is not a compile report (no {', '.join(missing)}); give the file `mcc compile --report` "
                       "wrote", path=args.report_json)
    write_atomic(out, render_html(report).encode())
    print(f"HTML report written to {out}")


def _format_finetune(f: dict) -> str:
    """Fine-tuning's figures on its training samples, before and after, in one line."""
    def figures(m):
        parts = [f"{k.replace('_', ' ')} {m[k] * 100:.2f}%" for k in ("accuracy", "teacher_agreement") if k in m]
        sqnr = "inf" if m["sqnr_db"] is None else f"{m['sqnr_db']:.2f} dB"
        return ", ".join(parts + [f"output SQNR vs teacher {sqnr}"])
    return (f"fine-tuned {f['epochs']} epochs on {f['samples']} samples ({'labels and ' if f['labels'] else ''}"
            f"distillation, final loss {f['final_loss']:.4f}): before {figures(f['before'])}; after "
            f"{figures(f['after'])}")


# ---- pruning (issue 17) -----------------------------------------------------------------------------------------
def _prune_options(args) -> dict:
    """The prune pass's options from --prune*, checked before any work; none without --prune."""
    from .passes.prune import check_values

    flags = (args.prune_criterion, args.prune_schedule, args.prune_exclude, args.prune_round_to, args.prune_first_last)
    if args.prune is None:
        if any(f is not None for f in flags):
            raise MccError("--prune-criterion, --prune-schedule, --prune-exclude, --prune-round-to and "
                           "--prune-first-last set how --prune RATIO prunes: add --prune RATIO, or drop them")
        return {}
    try:
        ratio = float(args.prune)
    except ValueError:
        raise MccError(f"--prune {args.prune!r} is not a number; give the ratio as a fraction in [0, 1), e.g. "
                       "--prune 0.3") from None
    try:
        round_to = int(args.prune_round_to) if args.prune_round_to is not None else 1
    except ValueError:
        raise MccError(f"--prune-round-to {args.prune_round_to!r} is not a whole number, e.g. 8") from None
    options = {"prune": ratio, "prune_criterion": args.prune_criterion or "l1",
               "prune_schedule": args.prune_schedule or "uniform", "prune_round_to": round_to,
               "prune_exclude": tuple(args.prune_exclude or ()), "prune_first_last": bool(args.prune_first_last)}
    check_values(ratio, options["prune_criterion"], options["prune_schedule"], round_to)
    return options


def _format_compression(c: dict, pruning: dict | None) -> list[str]:
    """One summary line per measured compression pass (compiler.compression_report), then the total."""
    def figures(e: dict) -> str:
        parts = [f"MACs {e['macs']['before']:,} -> {e['macs']['after']:,} (x{e['macs']['after'] / max(e['macs']['before'], 1):.3f})",
                 f"params {e['params']['before']:,} -> {e['params']['after']:,}",
                 f"file {e['bytes']['before']:,} -> {e['bytes']['after']:,} bytes"]
        if "latency_ms" in e:
            parts.append(f"latency {e['latency_ms']['before']:.3f} -> {e['latency_ms']['after']:.3f} ms")
        if "sqnr_db" in e:
            parts.append("float output SQNR vs source " + " -> ".join(
                "inf" if v is None else f"{v:.2f} dB" for v in e["sqnr_db"].values()))
        if "accuracy" in e:
            parts.append("accuracy " + " -> ".join(f"{v * 100:.2f}%" for v in e["accuracy"].values()))
        return "; ".join(parts)

    lines = []
    for e in c["passes"]:
        head = e["pass"]
        if e["pass"] == "prune" and pruning is not None:
            head = (f"pruned ({pruning['criterion']}, {pruning['schedule']} {pruning['ratio']:g}): "
                    f"{len(pruning['groups'])} groups")
        lines.append(f"{head}: {figures(e)}")
    if len(c["passes"]) > 1:
        lines.append(f"compression total ({' -> '.join(c['order'])}): {figures(c['total'])}")
    where = [w for w in (c["runtime"] and f"latency in {c['runtime']}, 1 thread, median",
                         c["data"] and f"SQNR / accuracy of the float graph on {c['data']}") if w]
    if where:
        lines.append(f"  ({'; '.join(where)})")
    return lines


def _compression_options(args) -> dict:
    """The options of the compression passes (passes/low_rank.py, passes/depthwise_separable.py) that were given."""
    given = {"low_rank": args.low_rank, "low_rank_energy": args.low_rank_energy,
             "low_rank_include": tuple(args.low_rank_layers or ()), "low_rank_exclude": tuple(args.low_rank_exclude or ()),
             "depthwise": tuple(args.depthwise or ()), "depthwise_ratio": args.depthwise_ratio}
    return {k: v for k, v in given.items() if v not in (None, ())}


def _binary_options(args) -> dict:
    """The binarize pass's options (passes/binarize.py) that were given (targets arm-binary / x86-binary)."""
    given = {"binary_layers": tuple(args.binary_layers or ()), "binary_activations": args.binary_activations}
    return {k: v for k, v in given.items() if v not in (None, ())}


def _print_compression(report: dict) -> None:
    """Per split layer: form, rank, MACs before and after, output error on the calibration data."""
    for r in report["passes"]:
        if r["pass"] not in ("low_rank", "depthwise_separable") or not r["notes"].get("layers"):
            continue
        print(f"{r['pass']}: MACs {r['before']['macs']:,} -> {r['after']['macs']:,}, params {r['before']['params']:,}"
              f" -> {r['after']['params']:,}")
        for name, la in r["notes"]["layers"].items():
            rank = f" rank {'x'.join(map(str, la['rank']))}" if "rank" in la else ""
            err = la.get("output_error")
            print(f"  {name:<32} {la['form'] + rank:<24} MACs {la['macs_before']:>12,} -> {la['macs_after']:>12,}"
                  + (f"  output error {err:.4%}" if err is not None else "")
                  + (f"  ({la['why']})" if "why" in la else ""))


def _format_guard(f: dict) -> str:
    """The fidelity guard's figures, one line per output."""
    lines = [f"int8 fidelity on {f['samples']} {f['data']} (mcc runtime, rules {f['rules']}) against the float model:"]
    for name, o in f["outputs"].items():
        sqnr = "inf (exact)" if o["sqnr_db"] is None else f"{o['sqnr_db']:.2f} dB"
        top1 = f", top-1 agreement {o['top1_agreement'] * 100:.2f}%" if "top1_agreement" in o else ""
        low = (f"  (below {f['threshold_db']:g} dB: see the warning)"
               if o["sqnr_db"] is not None and o["sqnr_db"] < f["threshold_db"] else "")
        lines.append(f"  output '{name}': SQNR {sqnr}{top1}{low}")
    return "\n".join(lines)


def _read_model_graph(path):
    from .validate import read_compiled

    return read_compiled(path)[2]


def _cmd_run(args) -> None:
    from .datafiles import match_inputs, read_arrays, run_in_batches
    from .fileio import write_atomic
    from .runtime import run

    if args.output:
        from .fileio import check_output_path

        check_output_path(args.output)
    from .runtime.rules import rule_set
    from .validate import DEFAULT_RULES, read_compiled

    if args.rules:
        rule_set(args.rules)  # an unknown rule set is refused before any work
    _, fmt, graph = read_compiled(args.model)
    rules = args.rules or DEFAULT_RULES[fmt]
    feeds, notes = match_inputs(read_arrays(args.input), graph.inputs, path=args.input)
    outputs = run_in_batches(lambda f: run(graph, f, rules=rules), feeds, graph.inputs[0].shape[0])
    for n in notes:  # after the run: a failing command's stderr is its one error paragraph
        print(n, file=sys.stderr)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)} min={value.min():.6g} max={value.max():.6g}")
    if args.output:
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        write_atomic(args.output, buf.getvalue())
        print(f"outputs written to {args.output}")


def _cmd_inspect(args) -> None:
    from .compiler import load_model, lower
    from .ir.stats import format_table
    from .ir.text import dumps

    if Path(args.model).suffix == ".tflite" and not args.after:
        graph = _read_model_graph(args.model)  # any .tflite, quantized ones included, as the file holds it
    else:
        graph = load_model(args.model, trust_pickle=args.trust_pickle, input_shapes=_shapes(args.input_shape))
        if args.after:
            graph, _ = lower(graph, args.target, stop_after=args.after)
    print(dumps(graph))
    print(format_table(graph))


def _cmd_validate(args) -> int:
    import json

    if args.device and args.device != "qemu-arm64":
        from .devices.profiles import get_profile

        get_profile(args.device)  # an unknown board is refused before any work
    if args.device or args.host:
        from .devices.remote import format_device_report, validate_on_device

        if args.reference or args.kernels:
            raise MccError("--reference and --kernels are for a validate here; with --device / --host mcc compares "
                           "LiteRT's ref and default kernels and its runtime, device against host")
        report = validate_on_device(args.model, args.input, args.device, args.host, args.python, args.ssh_config,
                                    args.remote_dir, progress=Progress(not args.json), cpu=args.cpu,
                                    rebuild=args.rebuild_device)
        print(json.dumps(report, indent=2) if args.json else format_device_report(report))
        return 0 if report["ok"] else 1
    from .validate import format_report, validate

    kernels = None if args.kernels is None else tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    report = validate(args.model, args.input, args.reference, kernels, progress=Progress(not args.json),
                      cle=args.cle)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def _load_for_analysis(args):
    """The shared start of analyze and prune-sensitivity: output paths and matplotlib checked before any work,
    then the model loaded; returns (graph, progress)."""
    from .analyze import pyplot
    from .compiler import load_model
    from .fileio import check_output_path

    for path in (args.plot, args.json):
        if path is not None:
            check_output_path(path)
    if args.plot is not None:
        pyplot()  # without matplotlib, refuse before any work
    progress = Progress(not args.quiet)
    graph = load_model(args.model, trust_pickle=args.trust_pickle, input_shapes=_shapes(args.input_shape),
                       progress=progress)
    return graph, progress


def _write_analysis(args, plot, data: dict, what: str) -> None:
    """--plot and --json of analyze and prune-sensitivity."""
    import json

    from .fileio import write_atomic

    if args.plot:
        plot(args.plot)
        print(f"plot written to {args.plot}")
    if args.json:
        write_atomic(args.json, (json.dumps(data, indent=2) + "\n").encode())
        print(f"{what} written to {args.json}")


def _cmd_prune_sensitivity(args) -> None:
    """Per-group pruning sensitivity (prune_sensitivity.py): the table printed; --plot, --json."""
    from .passes.finetune import read_finetune_data
    from .passes.prune import check_values
    from .prune_sensitivity import DEFAULT_RATIOS, check_ratios, format_sensitivity, plot_sensitivity, sensitivity

    ratios = DEFAULT_RATIOS if args.ratios is None else check_ratios(args.ratios)
    check_values(0.0, args.criterion)
    graph, progress = _load_for_analysis(args)
    result = sensitivity(graph, read_finetune_data(args.data, graph), ratios, args.criterion, progress)
    print(format_sensitivity(result))
    _write_analysis(args, lambda path: plot_sensitivity(result, path), result.to_json(), "sensitivity")


def _cmd_analyze(args) -> None:
    """Per-layer sensitivity (analyze.py): the table, and the fallback it would choose, printed; --plot, --json."""
    from .analyze import DEFAULT_FALLBACK_SQNR, Quantizer, analyze, choose_fallback, format_analysis, plot
    from .compiler import calibration_arrays
    from .targets import get_target

    target = get_target(args.target)
    if not target.needs_calibration:
        raise MccError(f"mcc analyze measures int8 quantization, and target {target.name} emits "
                       f"{target.number_format}: choose arm-int8 or x86-int8")
    _check_int8_options(args)
    graph, progress = _load_for_analysis(args)
    options = {"calibration": calibration_arrays(args.calib, graph), "observer": args.observer,
               "bias_correction": args.bias_correction}
    quantizer = Quantizer(graph, args.target, {k: v for k, v in options.items() if v is not None}, progress)
    analysis = analyze(quantizer)
    target_db = DEFAULT_FALLBACK_SQNR if args.fallback_sqnr is None else args.fallback_sqnr
    chosen = choose_fallback(quantizer, analysis, target_db)
    print(format_analysis(analysis, chosen))
    _write_analysis(args, lambda path: plot(analysis, path), {**analysis.to_json(), "fallback": chosen}, "analysis")


def _cmd_targets(args) -> None:
    from .targets import TARGETS

    for t in TARGETS.values():
        print(f"{t.name:<14} {t.backend:<8} {t.description}\n{'':<14} passes: {', '.join(t.pipeline)}")


# ---- build integration (issue 20): mcc init, mcc build, mcc --cmake-dir --------------------------------------
def _cmd_init(args) -> None:
    from .fileio import write_atomic
    from .project import init_text

    model = Path(args.model) if args.model else None
    folder = model.parent if model is not None else Path(".")
    out = folder / "mcc.toml"
    if out.exists():
        raise MccError("exists already; mcc init does not overwrite it (edit it, or delete it first)", path=out)
    write_atomic(out, init_text(model, folder).encode())
    print(f"wrote {out}; edit it, then run `mcc build{'' if folder == Path('.') else f' --project {out}'}`")


def _cmd_build(args) -> int:
    import json

    from .builder import build, format_entry, format_summary

    def say(entry):
        if entry["status"] == "failed":
            print(f"mcc: error: {entry['error']}", file=sys.stderr)
        for w in entry.get("warnings", []):
            print(f"mcc: warning: {w}", file=sys.stderr)
        if not args.json:
            print(format_entry(entry), flush=True)

    summary = build(args.project, force=args.force, progress=Progress(not (args.quiet or args.json)), say=say)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return summary["exit_code"]


class _PrintCmakeDir(argparse.Action):
    """`mcc --cmake-dir`: the folder of mccConfig.cmake and mcc.cmake (find_package(mcc) with mcc_DIR, or include)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(Path(__file__).resolve().parent / "cmake")
        parser.exit()


def _add_build_commands(sub) -> None:
    n = sub.add_parser("init", help="write a commented mcc.toml (next to MODEL, or here for the model file here)")
    n.add_argument("model", nargs="?", help="the model file (default: the only model file in this folder)")
    n.set_defaults(func=_cmd_init)
    b = sub.add_parser("build", help="compile every model of mcc.toml that changed since the last build")
    b.add_argument("--project", default="mcc.toml", help="the project file (default: mcc.toml)")
    b.add_argument("--json", action="store_true", help="print the build summary as JSON (for CI)")
    b.add_argument("--force", action="store_true", help="compile every entry, up to date or not")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    b.set_defaults(func=_cmd_build)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcc", description="model compression compiler for edge devices")
    p.add_argument("--version", action="version", version=f"mcc {__version__}")
    p.add_argument("--cmake-dir", action=_PrintCmakeDir, nargs=0,
                   help="print the folder of mcc's CMake module (mccConfig.cmake) and exit")
    sub = p.add_subparsers(dest="command", required=True)

    def model_options(sp):
        sp.add_argument("--trust-pickle", action="store_true",
                        help="allow loading a pickled torch.save(model) file (runs code from the file)")
        sp.add_argument("--input-shape", help="input shape(s) for models that do not record them (TorchScript, "
                        "pickled modules, ONNX with symbolic dimensions), e.g. 1,3,224,224; ';' between inputs")

    c = sub.add_parser("compile", help="compile a model for a target")
    c.add_argument("model")
    c.add_argument("--target", required=True, help="see `mcc targets`")
    c.add_argument("-o", "--output",
                   help="output file (default: the model's name with the target's suffix, .tflite or .onnx)")
    c.add_argument("--report", help="write the compile report as JSON")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("--calib", help="calibration data for int8 targets and for --low-rank / --depthwise: .npz by "
                   "input name or .npy, batch first")
    c.add_argument("--observer", help="activation range observer: mse (default), minmax, percentile or "
                   "percentile:P (e.g. percentile:99.9)")
    c.add_argument("--io", choices=["float", "int8"], help="model inputs/outputs: float (QUANTIZE/DEQUANTIZE "
                   "at the edges) or int8")
    c.add_argument("--require-int8", action="store_true", default=None,
                   help="fail if any op would stay in float")
    c.add_argument("--no-bias-correction", dest="bias_correction", action="store_false", default=None)
    c.add_argument("--no-cle", dest="cle", action="store_false", default=None,
                   help="skip cross-layer equalisation")
    c.add_argument("--fallback", choices=["float", "int16"], help="mixed precision: keep the layers `mcc analyze` "
                   "blames, worst first, in this precision until the output SQNR reaches --fallback-sqnr")
    c.add_argument("--fallback-sqnr", type=float, metavar="DB",
                   help="output SQNR (dB, on the calibration data) that --fallback aims for; default 15")
    c.add_argument("--min-sqnr", type=float, metavar="DB",
                   help="int8 targets: fail (exit 1, no file written) when a model output's SQNR against the float "
                   "model, measured after quantizing, is below DB (without it, below 15 dB is a warning)")
    c.add_argument("--labels", metavar="FILE", help="label file (one label per line, one per class of the first "
                   "output) to embed: TFLite Metadata with the file packed in the .tflite, ONNX metadata_props")
    c.add_argument("--norm-mean", metavar="M[,M...]", help="input normalization (x - mean) / std to embed as "
                   "metadata: the mean, one value or one per channel")
    c.add_argument("--norm-std", metavar="S[,S...]", help="the std of --norm-mean's normalization")
    c.add_argument("--html", metavar="PATH", help="write the compile report as a self-contained HTML page")
    c.add_argument("--finetune", metavar="TRAIN.npz", help="fine-tune the (compressed) float model against the "
                   "source model as teacher before quantizing: .npz with one array per model input and optional "
                   "integer 'labels' (distillation alone without them)")
    c.add_argument("--eval-data", metavar="VAL.npz", help="held-out samples (one array per model input, optional "
                   "integer 'labels' as for --finetune) on which the compile report measures every compression "
                   "pass's output SQNR and accuracy before and after (default: the --finetune or --calib samples)")
    c.add_argument("--epochs", type=int, help="fine-tuning epochs (default 5)")
    c.add_argument("--finetune-lr", type=float, metavar="LR",
                   help="fine-tuning Adam learning rate, decayed by a cosine to 0 (default 1e-3)")
    c.add_argument("--temperature", type=float, metavar="T", help="distillation temperature (default 4)")
    c.add_argument("--prune", metavar="RATIO", help="structured pruning: remove this fraction of each dependency "
                   "group's channels (uniform) or of the MACs (global), e.g. 0.3")
    c.add_argument("--prune-criterion", help="channel ranking: l1 (default), l2 (filter norms over the whole group) "
                   "bn_scale (|gamma| of the group's batch norms) or taylor (|activation x gradient| on the "
                   "--finetune data, else --calib)")
    c.add_argument("--prune-schedule", help="uniform (default: every group loses RATIO of its channels) or global "
                   "(lowest-ranked channels across groups until the MACs drop by RATIO)")
    c.add_argument("--prune-exclude", action="append", metavar="PATTERN",
                   help="leave the groups of layers matching this fnmatch pattern alone (repeatable)")
    c.add_argument("--prune-round-to", metavar="N", help="keep a multiple of N channels per group (e.g. 8)")
    c.add_argument("--prune-first-last", action="store_true", default=None,
                   help="also prune the groups of the first and last layer (left alone by default)")
    c.add_argument("--low-rank", type=float, metavar="RATIO", help="split conv / FC layers into low-rank chains "
                   "(SVD, Tucker-2, spatial SVD) keeping RATIO of their MACs, e.g. 0.5; needs --calib")
    c.add_argument("--low-rank-energy", type=float, metavar="E", help="instead of --low-rank: per layer, the rank "
                   "keeping E of the singular values' energy, e.g. 0.95")
    c.add_argument("--low-rank-layers", action="append", metavar="PATTERN",
                   help="split only layers whose names match (fnmatch, repeatable; `mcc inspect` lists names)")
    c.add_argument("--low-rank-exclude", action="append", metavar="PATTERN", help="never split these layers")
    c.add_argument("--depthwise", action="append", metavar="PATTERN", help="replace the k x k convs whose names "
                   "match (repeatable) by depthwise + pointwise convs, or 'auto' with --depthwise-ratio; needs --calib")
    c.add_argument("--depthwise-ratio", type=float, metavar="R",
                   help="with --depthwise auto: replace convs until they keep R of their MACs")
    c.add_argument("--device", help="warn when the compiled model and its activation arena will not fit this "
                   "board's memory (see `mcc devices`)")
    c.add_argument("--binary-layers", action="append", metavar="PATTERN", help="arm-binary / x86-binary: binarize "
                   "only the layers whose names match (fnmatch, repeatable; default: all but the first and last)")
    c.add_argument("--binary-activations", action="store_true", default=None, help="arm-binary / x86-binary: the "
                   "binary layers' inputs become signs too (two int8 QUANTIZEs; XNOR-popcount in mcc's runtime)")
    model_options(c)
    c.set_defaults(func=_cmd_compile)

    rp = sub.add_parser("report", help="render a compile report (JSON) as a self-contained HTML page")
    rp.add_argument("report_json", metavar="REPORT.json")
    rp.add_argument("-o", "--output", help="the HTML file (default: the report's name with .html)")
    rp.set_defaults(func=_cmd_report)

    a = sub.add_parser("analyze", help="per-layer int8 sensitivity: output SQNR with only each layer int8, and "
                       "with only it float")
    a.add_argument("model")
    a.add_argument("--calib", required=True, help="calibration data: .npz by input name or .npy, batch first")
    a.add_argument("--target", default="arm-int8", help="int8 target whose integer rules are measured: arm-int8 "
                   "(default) or x86-int8")
    a.add_argument("--plot", help="write the table as a PNG plot (needs matplotlib)")
    a.add_argument("--json", help="write the analysis as JSON")
    a.add_argument("--observer", help="activation range observer, as for compile")
    a.add_argument("--no-bias-correction", dest="bias_correction", action="store_false", default=None)
    a.add_argument("--fallback-sqnr", type=float, metavar="DB",
                   help="output SQNR the suggested float fallback aims for; default 15")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    model_options(a)
    a.set_defaults(func=_cmd_analyze, io=None, require_int8=None, fallback=None)

    ps = sub.add_parser("prune-sensitivity", help="per pruning group: accuracy (with labels) or output SQNR when "
                        "only that group is pruned, for a sweep of ratios")
    ps.add_argument("model")
    ps.add_argument("--data", required=True, help=".npz of the model's inputs by name and optional integer "
                    "'labels' (accuracy; without them output SQNR against the unpruned model)")
    ps.add_argument("--ratios", help="comma-separated fractions of each group's channels, default 0.1,0.3,0.5,0.7,0.9")
    ps.add_argument("--criterion", default="l1", help="channel ranking, as --prune-criterion (default l1)")
    ps.add_argument("--plot", help="write the sweep as a PNG plot (needs matplotlib)")
    ps.add_argument("--json", help="write the sweep as JSON")
    ps.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    model_options(ps)
    ps.set_defaults(func=_cmd_prune_sensitivity)

    r = sub.add_parser("run", help="run a compiled .tflite or .onnx in mcc's reference runtime")
    r.add_argument("model")
    r.add_argument("--input", required=True, help=".npz (one array per input name) or .npy; batch first")
    r.add_argument("-o", "--output", help="write outputs to this .npz")
    r.add_argument("--rules", help="integer arithmetic to reproduce: litert-ref (default for .tflite), "
                   "litert-xnnpack, onnxruntime (default for .onnx); see runtime/rules.py")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("validate", help="compare a compiled model in LiteRT (.tflite) or onnxruntime (.onnx) with "
                       "mcc's runtime, bit for bit")
    v.add_argument("model")
    v.add_argument("--input", required=True, help=".npz (one array per input name) or .npy; batch first")
    v.add_argument("--reference", help="the float source model (.pt2, .onnx, ...), for SQNR / cosine / top-1 "
                   "fidelity")
    v.add_argument("--kernels",
                   help="kernel sets to compare with, comma-separated: for .tflite, LiteRT's ref (BUILTIN_REF) and "
                   "default (XNNPACK), default both; for .onnx, onnxruntime's graph optimization levels ort-none, "
                   "ort-basic, ort-extended and ort-all, default ort-all,ort-none")
    v.add_argument("--no-cle", dest="cle", action="store_false", default=None,
                   help="with --reference, for a file compiled with --no-cle or --no-bias-correction: the per-layer "
                   "view compares with the float graph without cross-layer equalisation")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    _device_options(v)
    v.add_argument("--rebuild-device", action="store_true", help="with --device qemu-arm64: rebuild its arm64 "
                   "sysroot (built once, cached in $MCC_CACHE or ~/.cache/mcc; needs qemu-user-static, apt-get, dpkg)")
    v.set_defaults(func=_cmd_validate)

    be = sub.add_parser("bench", help="latency and peak memory of LiteRT and mcc's runtime, here or on a device")
    be.add_argument("model")
    be.add_argument("--input", help=".npz or .npy whose first batch is timed (default: seeded random inputs)")
    be.add_argument("--threads", default="1", help="thread counts to time, comma-separated, e.g. 1,4")
    be.add_argument("--runs", type=int, default=20, help="timed runs after warm-up (default 20)")
    be.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3; mcc's first compiles)")
    be.add_argument("--json", action="store_true", help="print the figures as JSON")
    _device_options(be)
    be.set_defaults(func=_cmd_bench)

    i = sub.add_parser("inspect", help="print a model's IR and per-layer table")
    i.add_argument("model")
    i.add_argument("--target", default="arm-fp32")
    i.add_argument("--after", help="show the graph after this pass of the target's pipeline")
    model_options(i)
    i.set_defaults(func=_cmd_inspect)

    t = sub.add_parser("targets", help="list targets")
    t.set_defaults(func=_cmd_targets)
    d = sub.add_parser("devices", help="list known boards: CPU, memory, ISA features, rule sets, how each is reached")
    d.set_defaults(func=_cmd_devices)
    _add_build_commands(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries():
            _check_input_files(args)
            return args.func(args) or 0
    except MccError as e:
        print(f"mcc: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a file the user named: permissions, a name too long, a full disk, a folder in the way
        print(f"mcc: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcc: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug in mcc: a short message, the traceback kept for the report
        saved = save_traceback()
        print(f"mcc: internal error, please report it with the file {saved}", file=sys.stderr)
        print(f"mcc: {traceback.format_exception_only(sys.exc_info()[1])[-1].strip()}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
