"""mcc inside other build systems (issue 20), with the system's cmake, cc and make: the CMake module builds a C
program that embeds the generated array (its size and checksum checked against the .tflite) and re-runs mcc when
the calibration file changes; the Make snippet of docs/build-integration.md does nothing the second time; the
README's build-integration commands build the example project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from build_projects import fnv1a, tiny_project

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project"
MCC = [sys.executable, "-m", "mcc"]


def sh(args, cwd, **kw) -> str:
    """Run a command; its stdout and stderr, or a failure showing both."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def cmake_dir() -> str:
    return sh(MCC + ["--cmake-dir"], ROOT).strip()


def test_cmake_builds_a_program_embedding_the_array_and_reruns_mcc_when_the_calibration_changes(tmp_path):
    tiny_project(tmp_path / "src")
    calib = tmp_path / "src" / "tiny_samples.npz"
    out = tmp_path / "cmake"
    sh(["cmake", "-S", str(EXAMPLE), "-B", str(out), f"-Dmcc_DIR={cmake_dir()}", f"-DMCC_COMMAND={';'.join(MCC)}",
        "-DMODEL_NAME=tiny_int8", f"-DMODEL_FILE={tmp_path / 'src/tiny.onnx'}", f"-DMODEL_CALIB={calib}"], tmp_path)
    first = sh(["cmake", "--build", str(out)], tmp_path)
    assert "mcc: building model tiny_int8 (arm-int8)" in first and "1 compiled" in first
    data = (out / "mcc-models/tiny_int8/tiny_int8.tflite").read_bytes()
    printed = sh([str(out / "check_model")], tmp_path)  # exits 1 unless aligned and sized as the header says
    assert printed.split()[:3] == [f"bytes={len(data)}", f"fnv1a={fnv1a(data):08x}", "aligned=1"]

    assert "mcc: building" not in sh(["cmake", "--build", str(out)], tmp_path)  # nothing changed: mcc not run
    os.utime(calib)  # now: newer than the outputs, the same content
    touched = sh(["cmake", "--build", str(out)], tmp_path)
    assert "mcc: building model tiny_int8" in touched and "tiny_int8 (arm-int8): up to date" in touched
    assert "mcc: building" not in sh(["cmake", "--build", str(out)], tmp_path)


def test_make_snippet_of_the_docs_runs_mcc_once(tmp_path):
    docs = (ROOT / "docs" / "build-integration.md").read_text()
    makefile, = re.findall(r"```make\n(.*?)```", docs, re.S)
    tiny_project(tmp_path)
    (tmp_path / "Makefile").write_text(makefile)
    mcc = " ".join(MCC)
    first = sh(["make", f"MCC={mcc}"], tmp_path)
    assert f"{mcc} build --project mcc.toml" in first and "3 entries: 3 compiled" in first
    assert (tmp_path / "build" / "a.c").is_file() and (tmp_path / "build" / ".mcc-stamp").is_file()
    second = sh(["make", f"MCC={mcc}"], tmp_path)
    assert "Nothing to be done" in second and "mcc" not in second


def _readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Build integration")[1].split("\n## ")[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


@pytest.mark.slow
def test_readme_build_integration_commands_build_the_example_project(tmp_path):
    """The README's commands, run as written in a copy of examples/ (the model, samples and project)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("build", "__pycache__"))
    bin_dir = tmp_path / "bin"  # `mcc` on PATH runs this checkout's mcc
    bin_dir.mkdir()
    (bin_dir / "mcc").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mcc "$@"\n')
    (bin_dir / "mcc").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    commands = _readme_commands()
    assert len(commands) >= 3
    output = [sh(["bash", "-euo", "pipefail", "-c", c], tmp_path, env=env) for c in commands]
    everything = "\n".join(output)
    assert "2 entries: 2 compiled" in everything and "2 entries: 0 compiled, 2 up to date" in everything
    built = tmp_path / "examples/project/build"
    assert {p.name for p in built.iterdir()} >= {"mobilenet_v2_arm_int8.tflite", "mobilenet_v2_arm_int8.c",
                                                 "mobilenet_v2_x86_int8.onnx", "mobilenet_v2_x86_int8.json"}
    data = next((tmp_path / "build/cmake/mcc-models").rglob("*.tflite")).read_bytes()
    assert f"bytes={len(data)} fnv1a={fnv1a(data):08x} aligned=1" in everything
    # mcc build and CMake compiled the same model with the same options: the same bytes
    assert data == (built / "mobilenet_v2_arm_int8.tflite").read_bytes()
