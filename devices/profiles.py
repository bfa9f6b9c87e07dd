"""Device profiles as data (`profiles.toml` beside this file): the memory figures `mcc build`'s memory check needs.

A profile is a table of facts, so that boards (issue 19: ISA, cores, how to reach them) join by adding rows and
keys, never code. The check is TFLite Micro's arithmetic: the model's bytes stay in flash where the board has
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
