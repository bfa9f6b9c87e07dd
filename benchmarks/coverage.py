"""How much of the public suites mcc compiles correctly, as a command anybody can rerun (issue 14).

    python benchmarks/coverage.py [--suite S ...] [--case NAME ...] [--quick] [--jobs N] [--timeout SECONDS] [-o docs/coverage.md]

Suites (benchmarks/coverage_suites/): onnx-node (onnx's 1,884 backend node cases, through mcc.onnx_backend),
onnx-models (onnx/backend/test/data's model cases), pytorchcv (CNN families, `pip install --no-deps
pytorchcv==0.0.74`), handwritten (tests/handwritten_models.py, when it exists). Every case is compiled for
arm-fp32, arm-int8, x86-fp32 and x86-int8 and judged as docs/coverage.md's header says; cases run in --jobs
worker processes with a --timeout per cell, so a hang or a crash is one recorded result. Progress goes to stderr,
the table to -o (default docs/coverage.md beside this folder) and its data beside it (docs/coverage.json); a run of
some suites replaces only their rows.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections import Counter
from pathlib import Path

# This file's folder is not an import root: a module named `coverage` there would shadow coverage.py, the package
# numba (and pytest-cov) import, in this process and in the spawned workers, which inherit sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from mcc.benchmarks.coverage_suites import SUITES, available, record
from mcc.benchmarks.coverage_suites.pool import run_cases
from mcc.benchmarks.coverage_suites.report import write_markdown

ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", action="append", choices=sorted(SUITES),
                   help="a suite to run (repeat for several; default: all available)")
    p.add_argument("--quick", action="store_true", help="a small sample of each suite")
    p.add_argument("--case", action="append", help="rerun only this case (its name in the table; repeat for "
                   "several), replacing its row in the recorded run of its suite")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=600, help="seconds a cell may take (default 600)")
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "coverage.md"),
                   help="the table; its data go beside it (.json), and a run of some suites replaces only theirs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    suites = args.suite or available()
    warnings.simplefilter("ignore")
    cases = []
    for suite in suites:
        print(f"collecting {suite} cases", file=sys.stderr, flush=True)
        cases += SUITES[suite].cases(args.quick)
    if args.case:
        missing = set(args.case) - {c.name for c in cases}
        if missing:
            raise SystemExit(f"no such case in {', '.join(suites)}: {', '.join(sorted(missing))}")
        cases = [c for c in cases if c.name in args.case]

    def progress(done, total, case, cells):
        shown = ", ".join(f"{c} {cell.status}" for c, cell in cells.items() if cell.status != "n/a")
        print(f"[{done}/{total}] {case.suite} {case.name}: {shown}", file=sys.stderr, flush=True)

    results = run_cases(cases, args.jobs, args.timeout, progress)
    command = shlex.join(["python", "benchmarks/coverage.py", *argv])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = out.with_suffix(".json")
    if args.case:
        merged = record.update_cases(record.load(data), command, cases, results)
    else:
        merged = record.update(record.load(data), command, suites, cases, results)
    record.save(data, merged)
    shown, all_cases, all_results = record.expand(merged, list(SUITES))
    out.write_text(write_markdown(record.commands(merged, shown), shown, all_cases, all_results))
    for suite in suites:
        counts = Counter(cell.status for c in cases if c.suite == suite for cell in results[(suite, c.name)].values())
        print(f"{suite}: " + ", ".join(f"{counts[s]} {s}" for s in ("pass", "refused", "wrong", "crash")) + " cells",
              file=sys.stderr)
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
