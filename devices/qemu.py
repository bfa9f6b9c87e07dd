"""Emulated arm64 (`--device qemu-arm64`): run mcc and LiteRT on aarch64 without a board.

mcc builds once a minimal arm64 Debian root file system (debootstrap, bookworm: Python 3.11, the version mcc's
pinned wheels are for) with a venv holding the aarch64 wheels of the base install and mcc itself, built as a
wheel from the running source tree. Commands run in it through chroot; the kernel's binfmt_misc hands every
aarch64 binary to qemu-aarch64-static (registered with the F flag, so the chroot needs no copy of qemu), and qemu
emulates its default CPU, "max" (HWCAP read in the rootfs: NEON, dot product, i8mm and SVE): XNNPACK and MLAS pick
aarch64 kernels, possibly ones a Cortex-A72/A76 board lacks the instructions for. Docker's arm64 images run
through the same binfmt handler; mcc uses debootstrap so that the only host requirements are Debian packages and
root, no daemon.

`run_in_rootfs` is the transport (files copied in, a command run, files copied out); `compare_on_device` is what
`mcc validate --device qemu-arm64` prints: per tensor, differing elements between arm64 and this host for each
peer's kernels and for mcc's runtime, and mcc against its peers on arm64 (`mcc validate` run there).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

from ..errors import MccError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "python3-venv")  # installed by debootstrap itself (--include)
VENV = "/opt/mcc"                                       # inside the rootfs
NEEDED_BYTES = 3 * 1024**3   # rootfs ~0.3 GB + wheels ~0.6 GB + pip's temporary copies, with margin
SOURCE = Path(__file__).resolve().parents[1]            # the package `mcc` that is running


def cache_dir() -> Path:
    """Where the rootfs lives: $MCC_CACHE/qemu-arm64, else ~/.cache/mcc/qemu-arm64 (outside any repository)."""
    base = os.environ.get("MCC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "mcc") / "qemu-arm64"


def check_host(cache: Path | None = None) -> None:
    """Refuse, with the command that fixes it, a host where the emulated board cannot run: not root (chroot and
    mount need it), no debootstrap or qemu-user-static, aarch64 not registered with binfmt_misc, too little disk."""
    if os.geteuid() != 0:
        raise MccError("--device qemu-arm64 needs root (debootstrap, chroot and mount): run mcc as root, e.g. "
                       "sudo -E mcc ...")
    missing = [pkg for pkg, tool in (("debootstrap", "debootstrap"), ("qemu-user-static", "qemu-aarch64-static"))
               if shutil.which(tool) is None]
    if missing:
        raise MccError(f"--device qemu-arm64 needs {' and '.join(missing)}: apt-get install -y debootstrap "
                       "qemu-user-static binfmt-support")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        raise MccError("binfmt_misc is not mounted, so the kernel cannot hand arm64 binaries to qemu: "
                       "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable "
                       "qemu-aarch64")
    entry = binfmt / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise MccError("aarch64 binaries are not registered with binfmt_misc: update-binfmts --enable qemu-aarch64 "
                       "(from the binfmt-support and qemu-user-static packages)")
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "rootfs" / "READY").exists():
        free = shutil.disk_usage(cache).free
        if free < NEEDED_BYTES:
            raise MccError(f"building the arm64 root file system needs about {NEEDED_BYTES / 1e9:.0f} GB and "
                           f"{cache} has {free / 1e9:.1f} GB free: free some space or set MCC_CACHE to a folder "
                           "on a larger disk")


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
# the features its HWCAP has. qemu-user 7.2 passes the host's x86 /proc/cpuinfo and /sys through, and cpuinfo (which
# XNNPACK asks which microkernels to use) then fails to parse them: without /sys, LiteRT silently runs without its
# XNNPACK delegate (TFLite's builtin NEON kernels instead), with the host's /sys XNNPACK crashes. So the emulated
# board gets the files a real board of that CPU has (Linux's arm64 cpuinfo format), through bind mounts.
CPU_PARTS = {"cortex-a53": (0xD03, "fp asimd evtstrm crc32 cpuid"),
             "cortex-a72": (0xD08, "fp asimd evtstrm crc32 cpuid"),
             "cortex-a76": (0xD0B, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
             "neoverse-n1": (0xD0C, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
             "max": (0xD0C, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp i8mm sve")}


def _cpu_files(root: Path, cpu: str, cores: int) -> Path:
    """A folder in the rootfs holding `cpuinfo` and `sys/devices/system/cpu/{possible,present}` for `cores` cores
    of `cpu`, written once."""
    part, features = CPU_PARTS[cpu]
    where = root / "opt" / "mcc-cpu" / f"{cpu}-{cores}"
    if not (where / "cpuinfo").exists():
        (where / "sys" / "devices" / "system" / "cpu").mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present", "online"):
            (where / "sys" / "devices" / "system" / "cpu" / name).write_text(f"0-{cores - 1}\n")
        (where / "cpuinfo").write_text("".join(
            f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
            f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part:#x}\nCPU revision\t: 0\n\n"
            for i in range(cores)))
    return where


def _chroot_argv(root: Path, command: str, cpu: str | None = None, cores: int = 1) -> list[str]:
    """`command` (sh) run in `root` with /proc, /dev and /dev/shm mounted in a private mount namespace, so that the
    mounts vanish with the process whatever happens; `cpu`: the CPU model qemu emulates (QEMU_CPU, which qemu-user
    reads from the environment of every binary binfmt hands it) and whose /proc/cpuinfo and /sys CPU lists the
    board shows, for `cores` cores; None: qemu's default, "max", and no CPU files (pip, while building)."""
    passed = " ".join(f"{k}={_quote(v)}" for k, v in os.environ.items() if k.lower() in _PASSED_ENV)
    script = f"set -e; mount -t proc proc {root}/proc; mount --bind /dev {root}/dev; mount -t tmpfs shm {root}/dev/shm; "
    if cpu:
        files = _cpu_files(root, cpu, cores)
        script += f"mount --bind {files}/cpuinfo {root}/proc/cpuinfo; mount --bind {files}/sys {root}/sys; "
    script += (f"exec chroot {root} /usr/bin/env -i PATH={VENV}/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "
               f"PIP_CERT={HOST_CA} {passed} {f'QEMU_CPU={cpu} ' if cpu else ''}/bin/sh -c {_quote(command)}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _chroot(root: Path, command: str, log: Path | None = None, what: str = "the arm64 command"):
    return _sh(_chroot_argv(root, command), what, log)


# pip in the rootfs reaches PyPI the way the host does: through the host's proxy settings, trusting the host's CA
# bundle (a network that inspects TLS adds its CA there; Debian's bundle in the rootfs lacks it)
_PASSED_ENV = {"http_proxy", "https_proxy", "no_proxy", "pip_index_url"}
HOST_CA = "/etc/ssl/certs/mcc-host-ca-bundle.crt"


def _host_ca_bundle() -> Path:
    return Path(os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().openssl_cafile)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _requirements() -> list[str]:
    """The base install's pinned dependencies and onnxruntime (the `ort` extra), so that .onnx files validate on
    the board too; pip in the rootfs picks their aarch64 wheels."""
    with open(SOURCE / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["ort"]]


_NOT_SHIPPED = shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build", ".git", "*.tflite", "*.onnx",
                                     ".venv", "out")


def _tree_digest(tree: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _install_mcc(root: Path, log: Path, say) -> None:
    """Install the running mcc in the rootfs as a wheel built from its source tree (pip wheel on a copy, so that
    setuptools' build/ and egg-info never land in the user's checkout); skipped while the sources are unchanged."""
    if not (SOURCE / "pyproject.toml").exists():
        raise MccError(f"mcc at {SOURCE} is installed without its source tree, and the emulated board installs mcc "
                       "from a wheel of it: run mcc from a checkout (pip install -e .)")
    stamp = root / "MCC_SOURCE"
    with tempfile.TemporaryDirectory(dir=root / "tmp") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(SOURCE, src, ignore=_NOT_SHIPPED)
        digest = _tree_digest(src)
        if stamp.exists() and stamp.read_text() == digest:
            return
        say("installing this mcc (a wheel of its source tree) in the arm64 rootfs")
        _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, str(src)],
            "building the mcc wheel", log, env={**os.environ, "PIP_NO_INPUT": "1"})
        wheel = next(Path(tmp).glob("mcc-*.whl"))
        _chroot(root, f"pip install -q --disable-pip-version-check --no-deps --force-reinstall "
                      f"/{wheel.relative_to(root)}", log, "installing mcc in the arm64 rootfs")
    stamp.write_text(digest)


def ensure_rootfs(rebuild: bool = False, progress=None) -> Path:
    """The cached arm64 rootfs with mcc's runtime dependencies and the running mcc installed; built on first use
    (or with `rebuild`), its mcc refreshed whenever the source tree's wheel changes. Returns its path."""
    cache = cache_dir()
    check_host(cache)
    root, log = cache / "rootfs", cache / "build.log"
    say = progress.say if progress else (lambda _: None)
    if rebuild and root.exists():
        shutil.rmtree(root)
    if not (root / "READY").exists():
        partial, start = cache / "rootfs.partial", time.perf_counter()
        if not (partial / "DEBOOTSTRAPPED").exists():   # a failed pip step does not redo the long debootstrap
            if partial.exists():
                shutil.rmtree(partial)
            say(f"building the arm64 Debian {SUITE} root file system in {root} (once; several minutes)")
            log.write_text("")
            _sh(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                 str(partial), MIRROR], "debootstrap of the arm64 rootfs", log)
            (partial / "DEBOOTSTRAPPED").touch()
        shutil.copy("/etc/resolv.conf", partial / "etc" / "resolv.conf")  # pip inside reaches PyPI
        shutil.copy(_host_ca_bundle(), partial / HOST_CA.lstrip("/"))
        say("installing mcc's runtime dependencies (aarch64 wheels) in the arm64 rootfs")
        _chroot(partial, f"python3 -m venv {VENV} && pip install -q --disable-pip-version-check "
                         + " ".join(_quote(r) for r in _requirements()), log, "pip install in the arm64 rootfs")
        (partial / "READY").write_text(json.dumps({"requirements": _requirements(),
                                                   "build_s": round(time.perf_counter() - start, 1)}))
        partial.rename(root)
    ready = json.loads((root / "READY").read_text())
    if ready["requirements"] != _requirements():
        say("mcc's dependencies changed: updating them in the arm64 rootfs")
        _chroot(root, "pip install -q --disable-pip-version-check " + " ".join(_quote(r) for r in _requirements()),
                log, "pip install in the arm64 rootfs")
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
    """The emulated arm64 board as a transport (devices/transport.py's interface): a job folder in the rootfs,
    commands chrooted there under the chosen CPU model. It holds the cache's lock from prepare() to close(): one
    job at a time, since another could reinstall mcc under a running one."""

    def __init__(self, cpu: str | None = None, rebuild: bool = False, progress=None):
        self.cpu, self.cores, self.rules = emulated_cpu(cpu)
        self.rebuild, self.progress = rebuild, progress
        self.name = f"qemu-arm64 ({self.cpu})"
        self.root = self.job_dir = self._lock = None

    def prepare(self) -> list[str]:
        cache_dir().mkdir(parents=True, exist_ok=True)
        self._lock = open(cache_dir() / "lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.root = ensure_rootfs(self.rebuild, self.progress)
        self.job_dir = Path(tempfile.mkdtemp(prefix="mcc-job-", dir=self.root / "tmp"))
        return ["python"]   # the rootfs's venv, first on PATH

    def put(self, local: Path, name: str) -> None:
        shutil.copyfile(local, self.job_dir / name)

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        command = f"cd /{self.job_dir.relative_to(self.root)} && " + " ".join(_quote(a) for a in argv)
        return subprocess.run(_chroot_argv(self.root, command, self.cpu, self.cores), capture_output=True, text=True,
                              timeout=timeout)

    def get(self, name: str, local: Path) -> None:
        if not (self.job_dir / name).exists():
            raise MccError(f"the job on the emulated arm64 board wrote no {name}")
        shutil.copyfile(self.job_dir / name, local)

    def close(self) -> None:
        if self.job_dir:
            shutil.rmtree(self.job_dir, ignore_errors=True)
        if self._lock:
            self._lock.close()   # releases the flock


# ---- what runs on both machines: every tensor of every kernel set, as the peers and mcc's runtime compute it ----

def dump(model, inputs, kernels=None) -> dict[str, np.ndarray]:
    """Every operator output of `model` on all samples of `inputs`, keyed "SOURCE|tensor": for a .tflite SOURCE is
    litert-ref / litert-default (LiteRT's kernel sets) and mcc:litert-ref / mcc:litert-xnnpack /
    mcc:litert-xnnpack-aarch64 (mcc's runtime under each rule set that claims to match them, on any ISA); for an
    .onnx, ort-all / ort-none and mcc:onnxruntime. `kernels`: the kernel sets (None: the format's defaults)."""
    from ..runtime import run
    from ..runtime.rules import known
    from ..validate import DEFAULT_KERNELS, RULES_FOR_KERNELS, model_batches, peer_runner, read_compiled
    from ..datafiles import match_inputs, read_arrays

    data, fmt, graph = read_compiled(model)
    feeds, _ = match_inputs(read_arrays(inputs), graph.inputs, path=inputs)
    batches = model_batches(graph, feeds, inputs)
    tensors = [o.name for n in graph.nodes for o in n.outputs]
    parts: dict[str, list[np.ndarray]] = {}
    done: set[str] = set()   # onnxruntime's levels share one rule set: mcc runs under it once
    for k in kernels or DEFAULT_KERNELS[fmt]:
        peer = peer_runner(data, k)
        base = RULES_FOR_KERNELS[k]
        sets = [r for r in (base, *(r for r in known() if r.startswith(base + "-"))) if r not in done]  # each ISA's
        done.update(sets)
        for b in batches:
            theirs = peer(b)
            for rules in sets:
                ours = run(graph, b, keep_all=True, rules=rules)
                for name in tensors:
                    parts.setdefault(f"mcc:{rules}|{name}", []).append(ours[name])
            for name in tensors:
                if name in theirs:
                    parts.setdefault(f"{'litert-' if fmt == 'tflite' else ''}{k}|{name}", []).append(
                        np.asarray(theirs[name]).reshape(graph.tensor(name).shape))
    return {k: np.concatenate([np.atleast_1d(p) for p in v]) for k, v in parts.items()}


def diff_dumps(arm: dict[str, np.ndarray], host: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per source (litert-ref, mcc:litert-ref, ...): elements and differing elements, arm64 against this host, in
    total and for the tensors that differ. Every tensor is compared exactly: the claim is the same bits."""
    out: dict[str, dict] = {}
    for key in sorted(set(arm) | set(host)):
        source, tensor = key.split("|", 1)
        s = out.setdefault(source, {"elements": 0, "differing": 0, "differing_tensors": {}, "missing": []})
        if key not in arm or key not in host:
            s["missing"].append(tensor)
            continue
        a, b = arm[key], host[key]
        bad = int(np.count_nonzero(a != b)) if a.shape == b.shape else a.size
        s["elements"] += a.size
        s["differing"] += bad
        if bad:
            s["differing_tensors"][tensor] = bad
    return out


def compare_on_device(model, inputs, kernels=None, rebuild: bool = False, progress=None, cpu: str | None = None,
                      timeout: float = 3600) -> dict:
    """`mcc validate MODEL --input X --device qemu-arm64 [--cpu BOARD]`: on the emulated board, `mcc validate
    --json` under the board's rule sets (mcc against LiteRT or onnxruntime there) and a dump of every tensor; the
    same dump here; the per-tensor differences arm64 vs this host for each peer kernel set and for mcc's runtime.
    `kernels`: as mcc validate's."""
    model, inputs = Path(model), Path(inputs)
    board = QemuTransport(cpu, rebuild, progress)
    start = time.perf_counter()
    if progress:
        progress.say(f"running mcc validate and the tensor dump on the emulated arm64 board ({board.cpu}; slow)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            python = board.prepare()
            m, x = "model" + model.suffix, "inputs" + inputs.suffix
            board.put(model, m)
            board.put(inputs, x)
            (tmp / "rules.json").write_text(json.dumps(board.rules))
            board.put(tmp / "rules.json", "rules.json")
            p = board.run([*python, "-m", "mcc.devices.qemu", "device-run", m, x, ",".join(kernels or ()),
                           "rules.json", "validate.json", "dump.npz"], timeout)
            if p.returncode:
                raise MccError(f"mcc on the emulated arm64 board failed (exit {p.returncode}): "
                               f"{p.stderr.strip()[-2000:]}")
            board.get("validate.json", tmp / "validate.json")
            board.get("dump.npz", tmp / "dump.npz")
        finally:
            board.close()
        arm_s = time.perf_counter() - start
        arm_validate = json.loads((tmp / "validate.json").read_text())
        with np.load(tmp / "dump.npz") as z:
            arm = dict(z)
    host = dump(model, inputs, kernels)
    versus = diff_dumps(arm, host)
    # The claim: mcc's runtime and LiteRT's reference kernels compute the same bits on both ISAs, and mcc matches
    # every peer on arm64 under that ISA's rule set. An optimized peer (XNNPACK, onnxruntime's MLAS) may itself
    # compute otherwise on arm64: reported, and covered by the aarch64 rule set (runtime/rules.py), not a failure.
    claimed = {k: v for k, v in versus.items() if k.startswith("mcc:") or k == "litert-ref"}
    ok = arm_validate["ok"] and all(v["differing"] == 0 and not v["missing"] for v in claimed.values())
    return {"device": "qemu-arm64", "cpu": board.cpu, "model": str(model), "inputs": str(inputs),
            "samples": arm_validate["samples"], "arm64_seconds": round(arm_s, 1), "arm64_validate": arm_validate,
            "arm64_vs_host": versus, "ok": ok}


def format_comparison(report: dict) -> str:
    lines = [f"{report['model']} on {report['samples']} samples of {report['inputs']}, emulated arm64 "
             f"(qemu, {report['cpu']}, {report['arm64_seconds']} s) vs this host ({os.uname().machine})"]
    lines.append("arm64 vs host, per kernel set (every tensor, exact):")
    for source, v in report["arm64_vs_host"].items():
        worst = ", ".join(f"{t}: {n}" for t, n in list(v["differing_tensors"].items())[:5])
        lines.append(f"  {source:22s} {v['differing']} of {v['elements']} elements differ"
                     + (f" ({worst})" if worst else "")
                     + (f"; not on both: {', '.join(v['missing'][:5])}" if v["missing"] else ""))
    lines.append("mcc vs its peers on arm64 (mcc validate there):")
    for c in report["arm64_validate"]["comparisons"]:
        lines.append(f"  {c['kernels']:8s} rules {c['rules']:22s} {c['differing']} of {c['elements']} elements "
                     "differ" + (f" (first: {c['first_differing_op']['node']})" if c["first_differing_op"] else ""))
    lines.append("OK: the same bits on arm64 and here" if report["ok"] else "DIFFERENCES (see above)")
    return "\n".join(lines)


def _device_run(model: str, inputs: str, kernels: str, rules_json: str, validate_json: str, dump_npz: str) -> None:
    """What runs on the board: `mcc validate --json` in-process under the board's rule sets, then the dump."""
    from ..validate import validate

    kernels = tuple(kernels.split(",")) if kernels else None
    rules = json.loads(Path(rules_json).read_text()) or None
    Path(validate_json).write_text(json.dumps(validate(model, inputs, kernels=kernels, rules=rules)))
    np.savez(dump_npz, **dump(model, inputs, kernels))


if __name__ == "__main__":
    if sys.argv[1:2] == ["device-run"] and len(sys.argv) == 8:
        _device_run(*sys.argv[2:])
    else:
        sys.exit("usage: python -m mcc.devices.qemu device-run MODEL INPUTS KERNELS RULES_JSON VALIDATE_JSON "
                 "DUMP_NPZ")
