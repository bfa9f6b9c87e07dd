"""Emulated arm64 (`--device qemu-arm64`): run mcc and LiteRT on aarch64 without a board, root or binfmt.

mcc builds once a minimal arm64 Debian user space (bookworm: Python 3.11, the version mcc's pinned wheels are
for) in a cache folder, with neither root, chroot nor debootstrap: apt-get, under its own state folders, downloads
the arm64 .debs of python3.11 and the C/C++ runtime libraries they and the wheels need, `dpkg -x` unpacks them,
and the host's pip puts the aarch64 wheels of the base install (and onnxruntime) into a site folder, plus mcc
itself as a wheel of the running source tree. 45 s (130 s without pip's cache) and 0.5 GB, against 10-15
minutes and 0.8 GB for a debootstrap root file system run through chroot. Programs run as `qemu-aarch64-static`
user-mode emulation with QEMU_LD_PREFIX at that folder (qemu resolves the arm64 program's absolute paths there
first: its dynamic loader, libraries, and the /proc/cpuinfo and /sys CPU lists the folder holds for the chosen CPU
model). qemu's default CPU, "max", also makes XNNPACK's int8 convolutions come out wrong (runtime/rules.py).

QEMU_CPU pins the emulated CPU to the board's (rpi4: cortex-a72), so XNNPACK picks the kernels that board would;
qemu's default, "max", offers the dot product, i8mm and SVE no Pi 4 has. Docker's arm64 images and
debootstrap --foreign need binfmt_misc and root; this needs only Debian's apt-get/dpkg and qemu-user-static.

`QemuTransport` is the board as a transport (devices/transport.py's interface), so `mcc validate` and `mcc bench
--device qemu-arm64` run devices/remote.py's flow, the one a board over SSH runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from ..errors import MccError
from .transport import build_wheel, source_stamp

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# python3.11's interpreter and standard library; libstdc++6 for the C++ wheels (LiteRT, llvmlite, onnxruntime)
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
SITE = "opt/mcc/site"                                   # in the sysroot: the wheels and mcc (PYTHONPATH)
PYTHON = "usr/bin/python3.11"
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_28_aarch64")           # what glibc 2.36 (bookworm) runs
NEEDED_BYTES = 2 * 1024**3   # sysroot ~75 MB + wheels ~420 MB + apt's and pip's downloads, with margin
SOURCE = Path(__file__).resolve().parents[1]            # the package `mcc` that is running


def cache_dir() -> Path:
    """Where the sysroot lives: $MCC_CACHE/qemu-arm64, else ~/.cache/mcc/qemu-arm64 (outside any repository)."""
    base = os.environ.get("MCC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "mcc") / "qemu-arm64"


def check_host(cache: Path | None = None, needed_bytes: int = NEEDED_BYTES) -> None:
    """Refuse, with the command that fixes it, a host where the emulated board cannot be built or run: no
    qemu-aarch64-static, no apt-get/dpkg (a Debian-like host), too little disk for a first build."""
    missing = [pkg for pkg, tool in (("qemu-user-static", "qemu-aarch64-static"), ("apt", "apt-get"),
                                     ("dpkg", "dpkg")) if shutil.which(tool) is None]
    if missing:
        raise MccError(f"--device qemu-arm64 needs {', '.join(missing)} (qemu-aarch64-static, apt-get and dpkg on "
                       f"PATH): on Debian or Ubuntu, sudo apt-get install -y {' '.join(missing)}")
    if not Path(KEYRING).exists():
        raise MccError(f"--device qemu-arm64 downloads Debian's arm64 packages and checks them against {KEYRING}: "
                       "sudo apt-get install -y debian-archive-keyring")
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "sysroot" / "READY").exists():
        free = shutil.disk_usage(cache).free
        if free < needed_bytes:
            raise MccError(f"building the arm64 sysroot needs about {needed_bytes / 1e9:.1f} GB and {cache} has "
                           f"{free / 1e9:.1f} GB free: free some space or set MCC_CACHE to a folder on a larger disk")


def _sh(argv: list[str], what: str, log: Path | None = None, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}\n")
    if r.returncode:
        tail = (r.stderr or r.stdout).strip().splitlines()[-15:]
        raise MccError(f"{what} failed (exit {r.returncode}):\n" + "\n".join(tail)
                       + (f"\n(full log: {log})" if log else ""))
    return r


# What an arm64 Linux shows of its CPU, per qemu CPU model: /proc/cpuinfo's MIDR fields (implementer 0x41, Arm) and
# the features its HWCAP has. qemu-user 7.2 shows arm64 programs the host's x86 /proc/cpuinfo and /sys, which
# cpuinfo (XNNPACK asks it which microkernels to use) cannot parse: without /sys CPU lists, LiteRT silently runs
# without its XNNPACK delegate (TFLite's builtin NEON kernels instead); with the host's, XNNPACK crashes. The sysroot
# holds the files a real board of that CPU has (Linux's arm64 format), which qemu's path prefix makes them see.
CPU_PARTS = {"cortex-a53": (0xD03, "fp asimd evtstrm crc32 cpuid"),
             "cortex-a72": (0xD08, "fp asimd evtstrm crc32 cpuid"),
             "cortex-a76": (0xD0B, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
             "neoverse-n1": (0xD0C, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
             "max": (0xD0C, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp i8mm sve")}


def _show_cpu(root: Path, cpu: str, cores: int) -> None:
    """Write the sysroot's /proc/cpuinfo and /sys/devices/system/cpu/{possible,present,online} for `cores` cores of
    `cpu` (one job at a time holds the sysroot, so one CPU at a time)."""
    part, features = CPU_PARTS[cpu]
    lists = root / "sys" / "devices" / "system" / "cpu"
    lists.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (lists / name).write_text(f"0-{cores - 1}\n")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text("".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part:#x}\nCPU revision\t: 0\n\n"
        for i in range(cores)))


def _requirements() -> list[str]:
    """The base install's pinned dependencies and onnxruntime (the `ort` extra), so that .onnx files validate on
    the board too; pip picks their aarch64 wheels."""
    with open(SOURCE / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["ort"]]


def _pip_aarch64(site: Path, args: list[str], log: Path, what: str) -> None:
    """The host's pip installing cp311 aarch64 wheels (never a source build) into `site`."""
    _sh([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "--target",
         str(site), "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:",
         *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)), *args], what, log,
        env={**os.environ, "PIP_NO_INPUT": "1"})


def _unpack_debian(partial: Path, cache: Path, log: Path) -> None:
    """apt-get, with its own state and cache folders under `cache` (the host's apt is untouched, no root needed),
    downloads the arm64 .debs of PACKAGES and their dependencies (checked against Debian's keyring);
    `dpkg -x` unpacks each into `partial`, running no maintainer script."""
    apt = cache / "apt"
    for d in ("lists/partial", "archives/partial", "etc/sources.list.d", "etc/preferences.d"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    (apt / "etc" / "sources.list").write_text(f"deb [arch=arm64 signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    opts = [f"-oDir::State={apt}", f"-oDir::State::Lists={apt}/lists", f"-oDir::State::status={apt}/status",
            f"-oDir::Cache={apt}", f"-oDir::Cache::Archives={apt}/archives",
            f"-oDir::Etc::SourceList={apt}/etc/sources.list",
            f"-oDir::Etc::SourceParts={apt}/etc/sources.list.d", f"-oDir::Etc::Preferences={apt}/etc/preferences",
            f"-oDir::Etc::PreferencesParts={apt}/etc/preferences.d", "-oAPT::Architecture=arm64",
            "-oAPT::Architectures=arm64",
            "-oAPT::Sandbox::User=root"]   # as root, apt would download as _apt, who cannot enter a private home
    _sh(["apt-get", *opts, "update"], "apt-get update (Debian's arm64 package lists)", log)
    _sh(["apt-get", *opts, "install", "--download-only", "--no-install-recommends", "-y", *PACKAGES],
        "downloading the arm64 packages", log)
    for deb in sorted((apt / "archives").glob("*.deb")):
        _sh(["dpkg", "-x", str(deb), str(partial)], f"unpacking {deb.name}", log)


def _install_mcc(root: Path, log: Path, say) -> None:
    """Install the running mcc in the sysroot's site folder as a wheel of its source tree (transport.build_wheel,
    the SSH board's too); skipped while the sources are unchanged (transport.source_stamp)."""
    stamp, site = root / "MCC_SOURCE", root / SITE
    if stamp.exists() and stamp.read_text() == source_stamp():
        return
    say("installing this mcc (a wheel of its source tree) in the arm64 sysroot")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        shutil.rmtree(site / "mcc", ignore_errors=True)
        _pip_aarch64(site, ["--no-deps", str(wheel)], log, "installing mcc in the arm64 sysroot")
    stamp.write_text(source_stamp())


def ensure_rootfs(rebuild: bool = False, progress=None) -> Path:
    """The cached arm64 sysroot with mcc's runtime dependencies and the running mcc installed; built on first use
    (or with `rebuild`), its mcc refreshed whenever the source tree changes. Returns its path."""
    cache = cache_dir()
    check_host(cache)
    root, log = cache / "sysroot", cache / "build.log"
    say = progress.say if progress else (lambda _: None)
    if rebuild and root.exists():
        shutil.rmtree(root)
    if not (root / "READY").exists():
        partial, start = cache / "sysroot.partial", time.perf_counter()
        shutil.rmtree(partial, ignore_errors=True)
        say(f"building the arm64 Debian {SUITE} sysroot in {root} (once; a minute or two)")
        log.write_text("")
        _unpack_debian(partial, cache, log)
        say("installing mcc's runtime dependencies (aarch64 wheels) in the arm64 sysroot")
        _pip_aarch64(partial / SITE, _requirements(), log, "pip install of the aarch64 wheels")
        (partial / "tmp").mkdir(exist_ok=True)
        (partial / "READY").write_text(json.dumps({"requirements": _requirements(),
                                                   "build_s": round(time.perf_counter() - start, 1)}))
        partial.rename(root)
    ready = json.loads((root / "READY").read_text())
    if ready["requirements"] != _requirements():
        say("mcc's dependencies changed: updating them in the arm64 sysroot")
        _pip_aarch64(root / SITE, _requirements(), log, "pip install of the aarch64 wheels")
        ready["requirements"] = _requirements()
        (root / "READY").write_text(json.dumps(ready))
    _install_mcc(root, log, say)
    return root


def emulated_cpu(choice: str | None = None) -> tuple[str, int, dict]:
    """The qemu CPU model for `choice`, its core count and the rule sets that go with it: a board of `mcc devices`
    (its qemu_cpu, cores and rules; default rpi4, so that XNNPACK picks a Cortex-A72's kernels, not those of qemu's
    "max", which has the dot product, i8mm and SVE no Pi 4 has), or a CPU model of CPU_PARTS (one core; the rules of
    the first board emulated with it, else each peer's aarch64 set)."""
    from .profiles import profiles

    boards = {name: p for name, p in profiles().items() if "qemu_cpu" in p}
    choice = choice or "rpi4"
    if choice in boards:
        return boards[choice]["qemu_cpu"], boards[choice]["cores"], boards[choice]["rules"]
    if choice not in CPU_PARTS:
        raise MccError(f"unknown emulated CPU '{choice}': name a board ({', '.join(sorted(boards))}) or a qemu CPU "
                       f"model ({', '.join(sorted(CPU_PARTS))})")
    return choice, 1, next((p["rules"] for p in boards.values() if p["qemu_cpu"] == choice), {})


class QemuTransport:
    """The emulated arm64 board as a transport (devices/transport.py's interface): a job folder in the sysroot,
    programs run by qemu-aarch64-static under the chosen CPU model. It holds the cache's lock from prepare() to
    close(): one job at a time, since another could reinstall mcc or show another CPU under a running one."""

    def __init__(self, cpu: str | None = None, rebuild: bool = False, progress=None):
        self.cpu, self.cores, self.rules = emulated_cpu(cpu)
        self.rebuild, self.progress = rebuild, progress
        self.name = f"qemu-arm64 ({self.cpu})"
        self.root = self.job_dir = self._lock = self.python = None

    def prepare(self) -> list[str]:
        cache_dir().mkdir(parents=True, exist_ok=True)
        self._lock = open(cache_dir() / "lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.root = ensure_rootfs(self.rebuild, self.progress)
        _show_cpu(self.root, self.cpu, self.cores)
        self.job_dir = Path(tempfile.mkdtemp(prefix="mcc-job-", dir=self.root / "tmp"))
        self.python = [shutil.which("qemu-aarch64-static"), str(self.root / PYTHON)]
        return self.python

    def put(self, local: Path, name: str) -> None:
        shutil.copyfile(local, self.job_dir / name)

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """argv run here, in the job folder; an arm64 program's child processes (the runner's benchmarks) start
        through the same qemu (MCC_DEVICE_PYTHON), so the host needs no binfmt_misc registration."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.job_dir), "LANG": "C.UTF-8",
               "QEMU_LD_PREFIX": str(self.root), "QEMU_CPU": self.cpu, "PYTHONPATH": str(self.root / SITE),
               "PYTHONNOUSERSITE": "1", "MCC_DEVICE_PYTHON": json.dumps(self.python)}
        return subprocess.run(argv, cwd=self.job_dir, env=env, capture_output=True, text=True, timeout=timeout)

    def get(self, name: str, local: Path) -> None:
        if not (self.job_dir / name).exists():
            raise MccError(f"the job on the emulated arm64 board wrote no {name}")
        shutil.copyfile(self.job_dir / name, local)

    def close(self) -> None:
        if self.job_dir:
            shutil.rmtree(self.job_dir, ignore_errors=True)
        if self._lock:
            self._lock.close()   # releases the flock
