"""docs/coverage.json: every measured cell as data, so that a run of some suites replaces only their rows and
docs/coverage.md is always rendered from one complete record (reports are data; the markdown is a view of it).

Each suite keeps the command that measured it; the markdown names every command that contributed."""

from __future__ import annotations

import json
from pathlib import Path

from .common import Case, Cell


def load(path: Path) -> dict:
    """{suite: {"command": ..., "cases": [{"name", "source", "ops", "cells": {column: [status, text]}}]}}; empty
    when there is no record yet."""
    return json.loads(path.read_text()) if path.exists() else {}


def update(record: dict, command: str, suites: list[str], cases: list[Case], results: dict) -> dict:
    """`record` with the given suites' entries replaced by this run's."""
    merged = {s: v for s, v in record.items() if s not in suites}
    for suite in suites:
        merged[suite] = {"command": command, "cases": [
            {"name": c.name, "source": c.source, "ops": list(c.payload.get("ops", [])) if isinstance(c.payload, dict)
             else [], "cells": {col: [cell.status, cell.text] for col, cell in results[(suite, c.name)].items()}}
            for c in sorted((c for c in cases if c.suite == suite), key=lambda c: c.name)]}
    return merged


def update_cases(record: dict, command: str, cases: list[Case], results: dict) -> dict:
    """`record` with only the given cases' rows replaced (a rerun of named cases); each touched suite's command
    gains this one, so the table names both."""
    merged = json.loads(json.dumps(record))
    for suite in sorted({c.suite for c in cases}):
        if suite not in merged:
            raise ValueError(f"no recorded run of suite {suite} to update; run the whole suite first")
        rows = {row["name"]: row for row in merged[suite]["cases"]}
        for c in (c for c in cases if c.suite == suite):
            if c.name not in rows:
                raise ValueError(f"suite {suite} has no recorded case {c.name!r}")
            rows[c.name]["cells"] = {col: [cell.status, cell.text] for col, cell in results[(suite, c.name)].items()}
        merged[suite]["command"] = f"{merged[suite]['command']}`, then `{command}"
    return merged


def save(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def expand(record: dict, order: list[str]) -> tuple[list[str], list[Case], dict]:
    """(suites in `order`, cases, results) of a record, in the form report.write_markdown takes."""
    suites = [s for s in order if s in record]
    cases, results = [], {}
    for suite in suites:
        for c in record[suite]["cases"]:
            cases.append(Case(suite, c["name"], c["source"], {"ops": c["ops"]}))
            results[(suite, c["name"])] = {col: Cell(*cell) for col, cell in c["cells"].items()}
    return suites, cases, results


def commands(record: dict, suites: list[str]) -> str:
    """`cmd` (suite, ...) for each command that measured some of `suites`, in suite order."""
    by_command: dict[str, list[str]] = {}
    for suite in suites:
        by_command.setdefault(record[suite]["command"], []).append(suite)
    return "; ".join(f"`{cmd}` ({', '.join(names)})" for cmd, names in by_command.items())
