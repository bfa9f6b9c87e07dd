"""Device profiles as data: one TOML file per board in `profiles/` beside this file (memory, CPU, ISA features,
rule sets, how to reach it).

A profile is a table of facts, so that boards join by adding a file, never code: `mcc build` and `mcc compile
--device` check memory against it, `mcc devices` lists it, `mcc bench` estimates latency from its MAC rate, and
`mcc validate --device` takes its rule sets. The check is TFLite Micro's arithmetic: the model's bytes stay in
flash where the board has flash, the activation arena lives in RAM. A board's keys:
  description  what the board is
  cpu, cores   the CPU and its core count (cores: what `mcc bench --threads` is worth trying up to)
  isa          aarch64, x86_64, armv7e-m
  features     ISA features the kernels care about: neon (Advanced SIMD), dotprod (SDOT/UDOT, Armv8.2), avx2 ...
  qemu_cpu     (arm boards) the CPU model qemu-aarch64 emulates for it (`qemu-aarch64 -cpu help`), so that the
               emulated board offers the peers' kernel selection only the instructions the real one has
  rules        by peer kernel set (validate.py: ref, default, onnxruntime), the runtime rule set (runtime/rules.py)
               whose arithmetic matches that peer on this board (an ISA whose kernels round differently gets its own)
  reach        how mcc runs models there: local (this machine), qemu-arm64 (emulated), ssh (--host user@host);
               empty: size and arena checks only
  macs_per_s   a rough int8 MAC rate per core for `mcc bench`'s latency estimate (an estimate, not a measurement:
               a published or back-of-envelope NEON/AVX2 figure, derated for memory traffic)
  ram_bytes    memory for the activation arena (and for the model, where there is no flash_bytes)
  flash_bytes  read-only memory the model's bytes can stay in (a microcontroller's flash); absent: the model is
               loaded into RAM
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import MccError

PROFILES_DIR = Path(__file__).with_name("profiles")


def profiles() -> dict[str, dict]:
    """Every board, by name (its file's name), in name order."""
    out = {}
    for path in sorted(PROFILES_DIR.glob("*.toml")):
        with open(path, "rb") as f:
            out[path.stem] = tomllib.load(f)
    return out


def get_profile(name: str) -> dict:
    known = profiles()
    if name not in known:
        raise MccError(f"unknown device '{name}'; known devices: {', '.join(sorted(known))} "
                       f"(one file per board in {PROFILES_DIR})")
    return {"name": name, **known[name]}


def memory_check(profile: dict, model_bytes: int, arena_bytes: int) -> dict:
    """Whether a model of `model_bytes` with an activation arena of `arena_bytes` fits the device: the figures, the
    verdict and, when it does not fit, the sentence saying by how much."""
    ram = arena_bytes + (0 if "flash_bytes" in profile else model_bytes)
    checks = [("RAM", ram, profile["ram_bytes"],
               "arena" if "flash_bytes" in profile else "model + arena")]
    if "flash_bytes" in profile:
        checks.append(("flash", model_bytes, profile["flash_bytes"], "model"))
    problems = [f"{what} needs {need:,} bytes of {kind} and the device has {have:,}"
                for kind, need, have, what in checks if need > have]
    return {"device": profile["name"], "model_bytes": model_bytes, "arena_bytes": arena_bytes,
            "ram_bytes": profile["ram_bytes"], "ram_needed": ram, "flash_bytes": profile.get("flash_bytes"),
            "fits": not problems, "problems": problems}


REACH = {"local": "runs here", "qemu-arm64": "emulated: --device qemu-arm64",
         "ssh": "real board: --host user@host"}


def format_devices() -> str:
    """`mcc devices`: one block per profile, its facts and how mcc runs models on it."""
    lines = []
    for name, p in profiles().items():
        mem = f"{_size(p['ram_bytes'])} RAM" + (f", {_size(p['flash_bytes'])} flash" if "flash_bytes" in p else "")
        reach = "; ".join(f"{r} ({REACH[r]}" + (f" --cpu {name}: qemu's {p['qemu_cpu']})" if r == "qemu-arm64" else ")")
                          for r in p["reach"]) or "none: size and arena checks only"
        lines += [f"{name}: {p['description']}",
                  f"  {p['cpu']}, {p['cores']} core(s), {p['isa']} [{', '.join(p['features'])}]; {mem}",
                  f"  rule sets: {', '.join(f'{k} -> {v}' for k, v in p['rules'].items())}",
                  f"  reached: {reach}"]
    return "\n".join(lines)


def latency_estimate_s(profile: dict, macs: int, threads: int = 1) -> float:
    """An estimate, not a measurement: MACs over the profile's per-core MAC rate times the threads it can use."""
    return macs / (profile["macs_per_s"] * min(threads, profile["cores"]))


def _size(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"
