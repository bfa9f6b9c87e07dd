"""Device profiles as data (`profiles.toml` beside this file): memory, CPU, ISA features, rule sets, how to reach it.

A profile is a table of facts, so that boards join by adding a table, never code: `mcc build` and `mcc compile
--device` check memory against it, `mcc devices` lists it, `mcc bench` estimates latency from its MAC rate, and
`mcc validate --device` takes its rule sets. The check is TFLite Micro's arithmetic: the model's bytes stay in flash where the board has
flash, the activation arena lives in RAM.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import MccError

PROFILES_FILE = Path(__file__).with_name("profiles.toml")


def profiles() -> dict[str, dict]:
    with open(PROFILES_FILE, "rb") as f:
        return tomllib.load(f)


def get_profile(name: str) -> dict:
    known = profiles()
    if name not in known:
        raise MccError(f"unknown device '{name}'; known devices: {', '.join(sorted(known))} "
                       f"(profiles in {PROFILES_FILE.name})")
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
        reach = "; ".join(f"{r} ({REACH[r]})" for r in p["reach"]) or "none: size and arena checks only"
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
