"""CRC checks of a model's zip archive, with the messages that name a damaged one.

A damaged archive is reported as such instead of as whatever torch trips over first. zipfile checks a member's
CRC-32 when it reads the member to the end: testzip reads every member for it, and a reader that reads a member
whole gets the same check on the way (frontend/pt2_archive.py reads a torch.export archive's members once,
checked as they are read, and checks the ones it does not read after: 15 MB of a MobileNetV2's weights read once
instead of twice).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import MccError, summarize


def damaged(path: Path, error: Exception) -> MccError:
    return MccError(f"is a truncated or corrupt zip archive ({summarize(error)}); re-save or re-copy the model",
                    path=path)


def bad_crc(path: Path, member: str) -> MccError:
    return MccError(f"is a corrupt zip archive: member '{member}' fails its CRC check; re-save or re-copy the model",
                    path=path)


def check(z: zipfile.ZipFile, path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Read each member of `infos` to the end, so zipfile checks its CRC; MccError naming the first that fails."""
    for info in infos:
        read(z, path, info)


def read(z: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo) -> bytes:
    """Member `info`'s bytes, CRC-checked; MccError naming the member (as testzip would) when it is damaged."""
    try:
        return z.read(info)
    except zipfile.BadZipFile:  # what testzip reports as the failing member: a bad CRC or local header
        raise bad_crc(path, info.filename) from None
    except Exception as e:  # EOFError, zlib.error, ... depending on where the damage is
        raise damaged(path, e) from None
