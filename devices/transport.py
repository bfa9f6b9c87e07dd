"""How mcc reaches a device: put files into a job folder there, run a command there, get files back.

A transport is four methods (and a name), so the local host, a board over SSH and an emulated arm64 root file
system (devices/qemu.py) are interchangeable under devices/remote.py:
    prepare() -> list[str]       the command that runs Python with this mcc on the device, installing what is
                                 missing first; creates the job folder
    put(local: Path, name: str)  copy a file into the job folder
    run(argv: list[str], timeout: float) -> subprocess.CompletedProcess   run argv in the job folder (text output)
    get(name: str, local: Path)  copy a file of the job folder back
    close()                      remove the job folder (the device's venv stays, for the next run)

The SSH transport needs only `ssh` here and `sh` plus python3 (3.11, as mcc's pinned wheels are cp311) there:
files travel through `cat` over the same connection, so the board needs no sftp server. Unlike Ansible or
Fabric, nothing is installed here; mcc's base install goes onto the board as a wheel built from this checkout,
into a venv that sees the board's system packages, and is rebuilt only when the source changes.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import MccError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REMOTE_BASE = ".cache/mcc-device"  # under the board user's home: the venv, the wheel, one folder per job
BASE_MODULES = {"numpy": "numpy==2.4.6", "numba": "numba==0.68.1", "onnx": "onnx==1.23.2",
                "flatbuffers": "flatbuffers==25.12.19", "ai_edge_litert": "ai-edge-litert==2.3.0",
                "threadpoolctl": "threadpoolctl==3.8.0"}  # pyproject.toml's base dependencies, by module name


class LocalTransport:
    """This machine, in a temporary job folder: the host side of every comparison runs the same runner."""

    name = "host"

    def __init__(self):
        self.job_dir = Path(tempfile.mkdtemp(prefix="mcc-job-"))

    def prepare(self) -> list[str]:
        return [sys.executable]

    def put(self, local: Path, name: str) -> None:
        shutil.copyfile(local, self.job_dir / name)

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.job_dir, capture_output=True, text=True, timeout=timeout)

    def get(self, name: str, local: Path) -> None:
        shutil.copyfile(self.job_dir / name, local)

    def close(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)


class SshTransport:
    """A board over OpenSSH (`ssh` with BatchMode: key login only, never a password prompt mcc could not answer)."""

    def __init__(self, host: str, python: str = "python3", ssh_config: str | None = None, timeout: float = 20,
                 remote_dir: str | None = None):
        self.host, self.python, self.timeout, self.remote_dir = host, python, timeout, remote_dir
        self.name = f"ssh {host}"
        self.ssh = ["ssh", *(["-F", ssh_config] if ssh_config else []), "-o", "BatchMode=yes",
                    "-o", f"ConnectTimeout={int(timeout)}", host]
        self.job_dir: str | None = None

    def _sh(self, script: str, timeout: float | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """`script` run by the board's shell (ssh hands the remote side one command line); bytes in and out."""
        return subprocess.run([*self.ssh, script], input=stdin, capture_output=True,
                              timeout=timeout or self.timeout * 3)

    def _check(self, p: subprocess.CompletedProcess, doing: str) -> str:
        out = p.stdout.decode(errors="replace") if isinstance(p.stdout, bytes) else p.stdout
        if p.returncode == 0:
            return out
        err = (p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else p.stderr).strip()
        if p.returncode == 255:  # ssh's own failure, not the remote command's
            if "Permission denied" in err or "Too many authentication failures" in err:
                raise MccError(f"ssh could not log in to {self.host}: authentication failed ({err.splitlines()[-1]}). "
                               f"mcc logs in with keys only (BatchMode): run `ssh-copy-id {self.host}` once, then "
                               f"check that `ssh {self.host} true` asks for no password")
            if "Host key verification failed" in err:
                raise MccError(f"ssh does not know the host key of {self.host}: run `ssh {self.host} true` once and "
                               "accept the key if it is the board's")
            raise MccError(f"cannot reach {self.host} over ssh: {err.splitlines()[-1] if err else 'no answer'}. "
                           f"Check that the board is on, on the network, and runs an SSH server (on Raspberry Pi "
                           f"OS: sudo raspi-config -> Interface Options -> SSH); `ssh {self.host} true` must work")
        raise MccError(f"on {self.host}, {doing} failed (exit {p.returncode}): {err[-2000:]}")

    def _remote(self, script: str, doing: str, timeout: float | None = None) -> str:
        return self._check(self._sh(script, timeout), doing)

    def prepare(self) -> list[str]:
        self._remote("true", "logging in")
        py = shlex.quote(self.python)
        found = self._sh(f"command -v {py}")
        if found.returncode == 255:
            self._check(found, "looking for python")
        if found.returncode != 0:
            raise MccError(f"no {self.python} on {self.host}: install it there (Raspberry Pi OS / Debian: "
                           f"sudo apt install python3 python3-venv), or name the board's Python 3.11 with --python")
        version = self._remote(f"{py} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'", "running python").strip()
        if version != "3.11":
            raise MccError(f"{self.python} on {self.host} is Python {version}; mcc's pinned wheels (numpy, numba, "
                           f"ai-edge-litert) are for 3.11: install python3.11 there and pass --python python3.11")
        base = self.remote_dir or self._remote('printf %s "$HOME"', "finding the home folder") + "/" + REMOTE_BASE
        venv_py = f"{base}/venv/bin/python"
        stamp = source_stamp()
        have = self._sh(f"cat {shlex.quote(base)}/venv/mcc-source 2>/dev/null")
        if have.returncode != 0 or have.stdout.decode().strip() != stamp:
            self._install(py, base, stamp)
        self.job_dir = self._remote(f"mkdir -p {shlex.quote(base)} && mktemp -d {shlex.quote(base)}/job.XXXXXX",
                                    "making a job folder").strip()
        return [venv_py]

    def _install(self, py: str, base: str, stamp: str) -> None:
        """A venv on the board (seeing its system packages, so apt's numpy serves), mcc's wheel from this checkout,
        and the base install's pinned dependencies that are missing; what pip cannot fetch is reported exactly."""
        q = shlex.quote(base)
        self._remote(f"mkdir -p {q} && ( test -x {q}/venv/bin/python || {py} -m venv --system-site-packages "
                     f"{q}/venv )", f"creating a venv (on Debian it needs python3-venv: sudo apt install "
                     f"python3-venv) in {base}/venv")
        with tempfile.TemporaryDirectory() as tmp:
            wheel = build_wheel(Path(tmp))
            self._check(self._sh(f"cat > {q}/{shlex.quote(wheel.name)}", stdin=wheel.read_bytes()),
                        "copying mcc's wheel")
        pip = f"{q}/venv/bin/python -m pip install -q --disable-pip-version-check"
        self._remote(f"{pip} --no-deps --force-reinstall {q}/{shlex.quote(wheel.name)}", "installing mcc's wheel",
                     timeout=600)
        deps = self._sh(f"{pip} {q}/{shlex.quote(wheel.name)}", timeout=1800)
        missing = self._sh(f"{q}/venv/bin/python -c " + shlex.quote(
            "import importlib.util as u; print(' '.join(m for m in %r if u.find_spec(m) is None))"
            % sorted(BASE_MODULES)))
        names = self._check(missing, "checking mcc's dependencies").split()
        if names:
            why = (deps.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            raise MccError(f"mcc's base install is incomplete on {self.host}: {', '.join(names)} missing, and pip "
                           f"could not install them ({why}). On the board, run: {base}/venv/bin/python -m pip "
                           f"install {' '.join(BASE_MODULES[n] for n in names)}")
        self._remote(f"printf %s {stamp} > {q}/venv/mcc-source", "recording the installed mcc")

    def put(self, local: Path, name: str) -> None:
        self._check(self._sh(f"cat > {shlex.quote(self.job_dir + '/' + name)}", stdin=Path(local).read_bytes()),
                    f"copying {name}")

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        p = self._sh(f"cd {shlex.quote(self.job_dir)} && {shlex.join(argv)}", timeout=timeout)
        if p.returncode == 255:
            self._check(p, "running the job")
        return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(errors="replace"),
                                           p.stderr.decode(errors="replace"))

    def get(self, name: str, local: Path) -> None:
        p = self._sh(f"cat {shlex.quote(self.job_dir + '/' + name)}", timeout=600)
        self._check(p, f"copying {name} back")
        Path(local).write_bytes(p.stdout)

    def close(self) -> None:
        if self.job_dir:
            self._sh(f"rm -rf {shlex.quote(self.job_dir)}")


def _sources() -> list[Path]:
    skip = {"tests", "benchmarks", "build", "docs", "scripts"}
    return sorted(p for p in PACKAGE_ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".toml", ".cmake", ".pt2"}
                  and not (set(p.relative_to(PACKAGE_ROOT).parts[:-1]) & (skip | {"__pycache__"}))
                  and not any(part.startswith(".") for part in p.relative_to(PACKAGE_ROOT).parts))


def source_stamp() -> str:
    """A hash of the files mcc's wheel is made of: the board's install is redone when (and only when) it changes."""
    h = hashlib.sha256()
    for p in _sources():
        h.update(str(p.relative_to(PACKAGE_ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def build_wheel(out: Path) -> Path:
    """mcc's wheel from this checkout, built in a copy so the checkout gets no build/ or egg-info."""
    if not (PACKAGE_ROOT / "pyproject.toml").is_file():
        raise MccError(f"mcc at {PACKAGE_ROOT} is not a source checkout (no pyproject.toml), so mcc cannot build the "
                       "wheel it copies to the board: install mcc on the board yourself (pip install mcc's wheel "
                       "into ~/" + REMOTE_BASE + "/venv) or run from a checkout")
    src = out / "src"
    shutil.copytree(PACKAGE_ROOT, src, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "build",
                                                                       "*.egg-info", ".venv", "out"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(src)], capture_output=True, text=True)
    if p.returncode != 0:
        raise MccError(f"building mcc's wheel for the board failed: {p.stderr.strip()[-1500:]}")
    return next(out.glob("mcc-*.whl"))
