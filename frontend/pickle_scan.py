"""What a pickle would import, found by reading its opcodes without running it.

A pickle is a program: its GLOBAL / STACK_GLOBAL / INST / OBJ opcodes name any importable callable, and REDUCE
calls it, so unpickling an untrusted file runs whatever it names. picklescan and modelscan read the opcode stream
(pickletools.genops) and list those names; mcc does the same, and judges them against torch's own allow-list for
`torch.load(weights_only=True)` (the tensor rebuild functions, storages, dtypes, OrderedDict, ...): a pickle that
names only those holds data, one that names anything else would run code. STACK_GLOBAL takes its module and name
from the two strings pushed before it, possibly through the memo, so string pushes and memo traffic are tracked;
anything the scan cannot follow (an extension-registry code, a name built at run time) counts as unsafe.
"""

from __future__ import annotations

import io
import pickletools
import zipfile

_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_EXTENSIONS = {"EXT1", "EXT2", "EXT4"}
UNFOLLOWED = "<a name the scan cannot follow>"


def pickle_imports(data: bytes) -> list[str]:
    """The 'module.name' of every callable the pickle (or, for a torch.save zip, each of its .pkl members) would
    import, in order; UNFOLLOWED for a reference the scan cannot resolve. ValueError if it is not a pickle."""
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
            raise ValueError(f"a damaged zip archive ({type(e).__name__})") from None
        if not members:
            raise ValueError("a zip archive without a .pkl member")
        return [name for m in members for name in _scan(m)]
    return _scan(data)


def _scan(data: bytes) -> list[str]:
    names: list[str] = []
    recent: list[object] = []  # the last values pushed, enough to follow STACK_GLOBAL's two strings
    memo: dict[int, object] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            kind = op.name
            if kind in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif kind == "STACK_GLOBAL":
                module, name = recent[-2:] if len(recent) >= 2 else (None, None)
                ok = isinstance(module, str) and isinstance(name, str)
                names.append(f"{module}.{name}" if ok else UNFOLLOWED)
            elif kind in _EXTENSIONS:
                names.append(UNFOLLOWED)
            elif kind in _STRINGS:
                recent.append(arg if isinstance(arg, str) else str(arg))
            elif kind in _MEMO_PUT:
                memo[int(arg)] = recent[-1] if recent else None
            elif kind == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif kind in _MEMO_GET:
                recent.append(memo.get(int(arg)))
            else:
                recent.append(None)
            del recent[:-2]
    except (ValueError, TypeError, IndexError, KeyError, EOFError) as e:
        raise ValueError(f"not a readable pickle ({type(e).__name__}: {e})") from None
    return names


def unsafe_imports(data: bytes) -> list[str]:
    """The imports of the pickle that torch's weights-only unpickler would not allow (empty: it holds data only)."""
    from torch._weights_only_unpickler import _get_allowed_globals
    from torch.serialization import get_safe_globals

    allowed = set(_get_allowed_globals())
    for g in get_safe_globals():
        obj = g[0] if isinstance(g, tuple) else g
        allowed.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return [n for n in pickle_imports(data) if n not in allowed]
