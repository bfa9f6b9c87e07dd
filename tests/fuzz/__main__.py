"""python -m tests.fuzz --minutes 30 [--reader onnx|tflite|pt2|npz|all] [--seed N] [--inputs N] [--jobs 2]

Runs the chosen fuzzers one after another (the time budget split evenly between them), saves one input per crash
signature under --crashes, and writes the summary to tests/fuzz/SUMMARY.md (overwriting it) and to stdout.
Exit status 1 when anything crashed or hung.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from . import NAMES, reader
from .runner import git_commit, run_reader, summary

SUMMARY = Path(__file__).with_name("SUMMARY.md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[1])
    ap.add_argument("--minutes", type=float, help="total wall-clock budget, split evenly between the readers "
                    "(default 30 unless --inputs is given)")
    ap.add_argument("--inputs", type=int, help="inputs per reader (stops at whichever of --minutes and --inputs "
                    "comes first)")
    ap.add_argument("--reader", choices=[*NAMES, "all"], default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take before it is a hang")
    ap.add_argument("--crashes", type=Path, help="folder for crashing inputs (default: a new temporary folder)")
    ap.add_argument("--no-summary-file", action="store_true", help=f"print the summary only, leave {SUMMARY.name}")
    args = ap.parse_args(argv)
    if args.minutes is None and args.inputs is None:
        args.minutes = 30.0
    names = NAMES if args.reader == "all" else (args.reader,)
    crashes = args.crashes or Path(tempfile.mkdtemp(prefix="mcc-fuzz-crashes-"))
    per_reader = args.minutes / len(names) if args.minutes is not None else None
    results = []
    for name in names:
        print(f"fuzzing {name}" + (f" for {per_reader:g} min" if per_reader else "")
              + (f", up to {args.inputs:,} inputs" if args.inputs else ""), file=sys.stderr, flush=True)
        r = run_reader(reader(name), seed=args.seed, minutes=per_reader, inputs=args.inputs, jobs=args.jobs,
                       timeout=args.timeout, crash_dir=crashes)
        print(f"  {r.inputs:,} inputs, {r.rate:,.0f}/s, {r.crashes:,} crashes, {r.hangs:,} hangs, "
              f"{len(r.findings)} signatures", file=sys.stderr, flush=True)
        results.append(r)
    command = "python -m tests.fuzz " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = summary(results, command=command.strip(), commit=git_commit(), timeout=args.timeout, jobs=args.jobs)
    if any(r.findings for r in results):
        text += f"\nCrashing inputs: {crashes}\n"
    if not args.no_summary_file:
        SUMMARY.write_text(text)
    print(text)
    for r in results:
        for tb in r.generator_tracebacks:
            print(f"fuzzer bug ({r.reader}): {tb}", file=sys.stderr)
    return 1 if any(r.crashes or r.hangs or r.generator_errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
