"""The compile report (compile_model's JSON) as one self-contained HTML page: `mcc report`, `mcc compile --html`.

The page needs no network and no script: inline CSS, and SVG plots drawn here from the report's numbers (per-pass
before/after bars of params, MACs and bytes; per-layer bytes, MACs and int8 SQNR), tables beside them, and the
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
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}
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


def pass_bars(passes: list[dict], metric: str) -> str:
    """Horizontal bars, two per pass: `metric` before (light) and after (dark), scaled to the largest value."""
    top = max([max(p["before"][metric], p["after"][metric]) for p in passes] + [1])
    row, left, width = 22, 170, 260
    height = 30 + row * len(passes)
    parts = [f'<svg class=plot data-metric="{metric}" width="{left + width + 90}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><text x="4" y="14" font-weight="bold">{metric} before / after '
             f'each pass</text>']
    for i, p in enumerate(passes):
        y = 24 + i * row
        for k, (key, color) in enumerate((("before", BEFORE), ("after", AFTER))):
            w = max(width * p[key][metric] / top, 0.5)
            parts.append(f'<rect x="{left}" y="{y + k * 9}" width="{w:.1f}" height="8" fill="{color}">'
                         f'<title>{escape(p["pass"])} {key}: {p[key][metric]:,}</title></rect>')
        bold = ' font-weight="bold"' if p["before"][metric] != p["after"][metric] else ""  # the passes that act
        parts.append(f'<text x="4" y="{y + 13}"{bold}>{escape(_short(p["pass"], 26))}</text>')
        parts.append(f'<text x="{left + width + 4}" y="{y + 13}">{p["after"][metric]:,}</text>')
    return "".join(parts) + "</svg>"


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
        ("Layers", _layers(report)),
        ("Validation", _validation(report.get("validation"))),
        ("Device memory check", _memory(report.get("memory"))),
    ]
    if meta:
        sections.insert(2, ("Embedded metadata", _table(["", "value"], [[k, str(v)] for k, v in meta.items()])))
    body = "".join(f"<h2 id=\"{escape(h.lower().replace(' ', '-'))}\">{escape(h)}</h2>{s}" for h, s in sections)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")
