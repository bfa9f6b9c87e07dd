"""The compile report (compile_model's JSON) as one self-contained HTML page: `mcc report`, `mcc compile --html`.

The page needs no network and no script: inline CSS, and SVG plots drawn here from the report's numbers (per-pass
before/after bars of params, MACs and bytes; per-layer bytes, MACs and int8 SQNR; the compression passes' params,
MACs, file bytes, latency, output SQNR and accuracy before/after, and their per-layer notes), tables beside them, the
validation result and device memory check when the report carries them (`validation`: `mcc validate --json`'s
report; `memory`: any flat mapping, e.g. a device profile's check). The same report always gives the same bytes.
TensorBoard and Netron draw a model interactively with JavaScript; this page is a static artifact to archive next
to the model in CI and review in a pull request.
"""

from __future__ import annotations

import math
from html import escape

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}h3{font-size:15px;margin-top:18px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17702f;font-weight:bold}.bad{color:#b00020;font-weight:bold}.muted{color:#777}
.plots{display:flex;flex-wrap:wrap;gap:16px}svg{background:#fff;border:1px solid #e5e5e5}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""
BEFORE, AFTER, SQNR_COLOR, LOW_COLOR = "#b8c4d6", "#2f6db5", "#2e9e5b", "#d0452f"


def _num(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if math.isfinite(v) else str(v)
    return escape(str(v))


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=n>{_num(c)}</td>" if i in numeric else f"<td>{_num(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[:n - 1] + "\u2026"


def before_after_bars(rows: list[tuple], metric: str, title: str) -> str:
    """Horizontal bars, two per (label, before, after) row: before (light) and after (dark), scaled to the largest
    value; a missing value (None, e.g. an exact output's infinite SQNR) draws no bar, a negative one a sliver."""
    top = max([v for _, b, a in rows for v in (b, a) if v is not None and math.isfinite(v)] + [1e-9])
    row, left, width = 22, 170, 260
    height = 30 + row * len(rows)
    parts = [f'<svg class=plot data-metric="{metric}" width="{left + width + 90}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><text x="4" y="14" font-weight="bold">{escape(title)}</text>']
    for i, (label, *values) in enumerate(rows):
        y = 24 + i * row
        for k, (value, key, color) in enumerate(zip(values, ("before", "after"), (BEFORE, AFTER))):
            if value is None or not math.isfinite(value):
                continue
            w = max(width * value / top, 0.5)
            parts.append(f'<rect x="{left}" y="{y + k * 9}" width="{w:.1f}" height="8" fill="{color}">'
                         f'<title>{escape(label)} {key}: {_num(value)}</title></rect>')
        bold = ' font-weight="bold"' if values[0] != values[1] else ""  # the rows that changed
        parts.append(f'<text x="4" y="{y + 13}"{bold}>{escape(_short(label, 26))}</text>')
        parts.append(f'<text x="{left + width + 4}" y="{y + 13}">{_num(values[1])}</text>')
    return "".join(parts) + "</svg>"


def pass_bars(passes: list[dict], metric: str) -> str:
    """`metric` before and after each pass of the pipeline (the pass records)."""
    return before_after_bars([(p["pass"], p["before"][metric], p["after"][metric]) for p in passes], metric,
                             f"{metric} before / after each pass")


def layer_bars(layers: list[dict], key: str, title: str, low: float | None = None) -> str:
    """Vertical bars, one per layer, of `key` (None skipped); bars below `low` in the warning colour."""
    values = [la.get(key) for la in layers]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = max(finite + [1e-9])
    bottom = min(finite + [0.0])
    step, height, base = max(4, min(14, 900 // max(len(layers), 1))), 160, 180
    width = 50 + step * len(layers)
    parts = [f'<svg class=plot data-metric="{key}" width="{width + 10}" height="{base + 20}" '
             f'xmlns="http://www.w3.org/2000/svg"><text x="4" y="14" font-weight="bold">{escape(title)} '
             f'(max {top:,.4g})</text><line x1="46" y1="{base}" x2="{width}" y2="{base}" stroke="#999"/>']
    for i, (la, v) in enumerate(zip(layers, values)):
        if v is None or not math.isfinite(v):
            continue
        h = max(height * (v - min(bottom, 0)) / (top - min(bottom, 0) or 1), 1)
        color = LOW_COLOR if low is not None and v < low else (SQNR_COLOR if low is not None else AFTER)
        parts.append(f'<rect x="{50 + i * step}" y="{base - h:.1f}" width="{step - 1}" height="{h:.1f}" '
                     f'fill="{color}"><title>{escape(la.get("name") or la.get("tensor", ""))} ({escape(la["op"])})'
                     f': {v:,.4g}</title></rect>')
    return "".join(parts) + "</svg>"


def _summary(r: dict) -> str:
    src, out, tgt = r["source"], r["output"], r["target"]
    rows = [["source", src.get("path") or "(a graph in memory)", ""], ["source sha256", src.get("sha256"), ""],
            ["target", f"{tgt['name']} ({tgt['backend']}, {tgt['number_format']}, {tgt['isa']})", ""],
            ["output", out.get("path") or "(not written)", ""], ["output sha256", out.get("sha256"), ""],
            ["file bytes", out["bytes"], ""], ["mcc", r.get("mcc_version"), ""]]
    for key in ("nodes", "params", "macs", "bytes"):
        b, a = src["totals"][key], out["totals"][key]
        rows.append([f"{key} (source -> output)", f"{b:,} -> {a:,}", f"{a / b:.3f}x" if b else ""])
    io_rows = [[kind[:-1], t["name"], f"{t['dtype']}{t['shape']}", t.get("layout") or "",
                (f"scale {t['quantization']['scale'][0]:.6g}, zero point {t['quantization']['zero_point'][0]}"
                 if t.get("quantization") else "")]
               for kind in ("inputs", "outputs") for t in out[kind]]
    return (_table(["", "value", "ratio"], rows) + "<h2>Inputs and outputs</h2>"
            + _table(["", "name", "type", "layout", "quantization"], io_rows))


def _fidelity(f: dict | None) -> str:
    if not f:
        return "<p class=muted>No fidelity guard in this report (float targets are not quantized).</p>"
    rows = []
    for name, o in f["outputs"].items():
        low = o.get("sqnr_db") is not None and o["sqnr_db"] < f["threshold_db"]
        sqnr = "inf (exact)" if o.get("sqnr_db") is None else f"{o['sqnr_db']:.2f} dB"
        rows.append([name, sqnr + (" (below threshold)" if low else ""), o.get("cosine"),
                     f"{o['top1_agreement'] * 100:.2f}%" if "top1_agreement" in o else "n/a"])
    text = (f"<p>int8 against the float model on {f['samples']} {escape(f['data'])} (mcc runtime, rules "
            f"{escape(f['rules'])}); warning threshold {f['threshold_db']:g} dB.</p>")
    warn = "".join(f"<li class=bad>{escape(w)}</li>" for w in f.get("warnings", []))
    return text + _table(["output", "SQNR", "cosine", "top-1 agreement"], rows) + (f"<ul>{warn}</ul>" if warn else "")


def _validation(v: dict | None) -> str:
    if not v:
        return "<p class=muted>No validation result in this report (run <code>mcc validate</code>).</p>"
    verdict = '<span class=ok>exact</span>' if v.get("ok") else '<span class=bad>differs</span>'
    rows = [[c.get("kernels"), c.get("rules"), c.get("exact"), c.get("elements"), c.get("differing"),
             c.get("max_abs_diff"), c.get("first_differing_op")] for c in v.get("comparisons", [])]
    return (f"<p>Validation: {verdict} on {_num(v.get('samples'))} samples of {escape(str(v.get('inputs')))}.</p>"
            + _table(["kernels", "rules", "exact", "elements", "differing", "max abs diff", "first differing op"],
                     rows, {3, 4, 5}))


def _memory(m: dict | None) -> str:
    if not m:
        return "<p class=muted>No device memory check in this report.</p>"
    return _table(["", "value"], [[k, v] for k, v in m.items()], {1})


def _layers(r: dict) -> str:
    sqnr = {la["tensor"]: la for la in (r.get("fidelity") or {}).get("layers", [])}
    rows, merged = [], []
    for la in r["layers"]:
        s = sqnr.get(la.get("output", la["name"]), {})
        merged.append({**la, "sqnr_db": s.get("sqnr_db"), "drop_db": s.get("drop_db")})
        rows.append([la["name"], la["op"], "x".join(map(str, la["output_shape"])), la["params"], la["macs"],
                     la["bytes"], s.get("sqnr_db"), s.get("drop_db")])
    plots = [layer_bars(merged, "bytes", "bytes per layer"), layer_bars(merged, "macs", "MACs per layer")]
    if sqnr:
        threshold = r["fidelity"]["threshold_db"]
        plots.append(layer_bars(merged, "sqnr_db", f"int8 SQNR per layer, dB (red: below {threshold:g})", threshold))
    return (f"<div class=plots>{''.join(plots)}</div>"
            + _table(["layer", "op", "output shape", "params", "MACs", "bytes", "SQNR dB", "drop dB"], rows,
                     {3, 4, 5, 6, 7}))


def _passes(r: dict) -> str:
    passes = r["passes"]
    rows = [[p["pass"], p["before"]["params"], p["after"]["params"], p["before"]["macs"], p["after"]["macs"],
             p["before"]["bytes"], p["after"]["bytes"], p.get("seconds")] for p in passes]
    plots = "".join(pass_bars(passes, m) for m in ("params", "macs", "bytes"))
    return (f"<div class=plots>{plots}</div>"
            + _table(["pass", "params before", "after", "MACs before", "after", "bytes before", "after", "seconds"],
                     rows, set(range(1, 8))))


# the compression report's figures (compiler.compression_report): key, heading, how a value reads
COMPRESSION_FIGURES = (("params", "params", _num), ("macs", "MACs", _num), ("bytes", "file bytes", _num),
                       ("latency_ms", "latency ms", _num),
                       ("sqnr_db", "output SQNR dB", lambda v: "inf (exact)" if v is None else f"{v:.2f}"),
                       ("accuracy", "accuracy", lambda v: f"{v * 100:.2f}%"))
# per-layer figures drawn as before / after bars: (before key, after key, what the two bars are)
LAYER_PAIRS = (("macs_before", "macs_after", "MACs before / after"),
               ("params_before", "params_after", "params before / after"),
               ("stock_bytes", "packed_bytes", "weight bytes: stock int8 file / packed 1 bit"))


LAYER_FIRST = ("op", "form", "rank")  # per-layer columns shown first, in this order; the rest as the notes give them


def _cell(v) -> str:
    return "x".join(map(str, v)) if isinstance(v, list) else v


def _compression_layers(entry: dict) -> str:
    """A pass's per-layer notes (forms, ranks, output errors, bytes): bars of each before / after pair, a table."""
    layers = entry["layers"]
    seen = [k for la in layers for k in la if k != "name"]
    keys = list(dict.fromkeys([k for k in LAYER_FIRST if k in seen] + seen))
    name = entry["pass"]
    plots = [before_after_bars([(la["name"], la.get(b), la.get(a)) for la in layers],
                               f"{name}_layers_{b.removesuffix('_before')}", f"{name}: {title} per layer")
             for b, a, title in LAYER_PAIRS if b in keys and a in keys]
    numeric = {i + 1 for i, k in enumerate(keys) if any(isinstance(la.get(k), (int, float)) and
                                                        not isinstance(la.get(k), bool) for la in layers)}
    return (f"<h3>{escape(entry['pass'])}: per layer</h3><div class=plots>{''.join(plots)}</div>"
            + _table(["layer", *(k.replace("_", " ") for k in keys)],
                     [[la["name"], *(_cell(la.get(k, "")) for k in keys)] for la in layers], numeric))


def _pruning(p: dict) -> str:
    """The prune pass's own section (compiler.pruning_report): how it chose, the groups it cut, what it left."""
    return (f"<h3>prune: groups</h3><p>{escape(p['criterion'])} criterion, {escape(p['schedule'])} schedule, ratio "
            f"{p['ratio']:g}: {p['mac_ratio_removed'] * 100:.1f}% of the MACs removed.</p>"
            + _table(["group", "channels", "kept", "removed"],
                     [[g["group"], g["channels"], g["kept"], g["removed"]] for g in p["groups"]], {1, 2, 3})
            + (_table(["left alone", "why"], [[k, v] for k, v in p["left_alone"].items()]) if p["left_alone"] else ""))


def _compression(c: dict | None, pruning: dict | None = None) -> str:
    """What each compression pass bought (issue 18, item 4): one row per pass and the total, before -> after, a
    bar plot per figure, the prune pass's groups, and each pass's per-layer notes."""
    if not c:
        return "<p class=muted>No compression pass in this report (--prune, --low-rank, --depthwise, binary " \
               "targets, --finetune).</p>"
    figures = [f for f in COMPRESSION_FIGURES if f[0] in c["total"]]
    entries = c["passes"] + [{"pass": "total", **c["total"]}] if len(c["passes"]) > 1 else c["passes"]
    rows = [[e["pass"], *(f"{fmt(e[k]['before'])} -> {fmt(e[k]['after'])}" for k, _, fmt in figures)]
            for e in entries]
    plots = "".join(before_after_bars([(e["pass"], e[k]["before"], e[k]["after"]) for e in entries],
                                      f"compression_{k}", f"{title} before / after each compression pass")
                    for k, title, _ in figures)
    where = [w for w in (c.get("runtime") and f"latency in {c['runtime']}, 1 thread, median",
                         c.get("data") and f"output SQNR against the source model and accuracy of the float graph "
                                           f"on {c['data']}") if w]
    text = (f"<p>Passes in order: {escape(' -> '.join(c['order']))}. Each stage is the model compiled with the "
            f"passes up to it against the model compiled without it{'; ' if where else ''}"
            f"{escape('; '.join(where))}.</p>")
    return (text + f"<div class=plots>{plots}</div>"
            + _table(["pass", *(title for _, title, _ in figures)], rows, set(range(1, len(figures) + 1)))
            + (_pruning(pruning) if pruning else "")
            + "".join(_compression_layers(e) for e in c["passes"] if e.get("layers")))


def render_html(report: dict) -> str:
    """The page for a compile report (the dict compile_model returns and `--report` writes)."""
    tgt = report["target"]["name"]
    title = f"mcc report: {report['source'].get('path') or 'model'} for {tgt}"
    warnings = "".join(f"<li>{escape(w)}</li>" for w in report.get("warnings", []))
    meta = report.get("metadata")
    sections = [
        ("Summary", _summary(report)),
        ("Warnings", f"<ul>{warnings}</ul>" if warnings else "<p class=muted>None.</p>"),
        ("Fidelity", _fidelity(report.get("fidelity"))),
        ("Passes", _passes(report)),
        ("Compression", _compression(report.get("compression"), report.get("pruning"))),
        ("Layers", _layers(report)),
        ("Validation", _validation(report.get("validation"))),
        ("Device memory check", _memory(report.get("memory"))),
    ]
    if meta:
        sections.insert(2, ("Embedded metadata", _table(["", "value"], [[k, str(v)] for k, v in meta.items()])))
    body = "".join(f"<h2 id=\"{escape(h.lower().replace(' ', '-'))}\">{escape(h)}</h2>{s}" for h, s in sections)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")
