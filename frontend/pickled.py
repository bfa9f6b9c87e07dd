"""Read a torch.save file: refuse state_dicts (no architecture) and, unless trusted, pickled modules.

Unpickling a whole nn.Module runs code named in the file and needs the model's class importable, so mcc first
opens the file with torch's weights-only unpickler, which executes nothing: if that succeeds the file holds only
data (a state_dict or checkpoint); if it refuses, the file names Python classes and is loaded only when the
user vouches for it with trust_pickle.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping

from ..errors import MccError
from ..ir import Graph

_SAVE_ADVICE = ("save the model itself: torch.export.save(torch.export.export(model.eval(), (example_input,)), "
                "'model.pt2')")


def load_pickled(path, trust_pickle: bool, input_shapes: list[tuple[int, ...]] | None) -> Graph:
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the file names Python classes: a pickled object, most likely an nn.Module
        return _load_module(path, trust_pickle, input_shapes)
    except Exception as e:
        raise MccError(f"could not be read as a torch.save file ({type(e).__name__}: {e})", path=path) from e
    if isinstance(data, Mapping):
        raise MccError(f"holds a dict (a state_dict or training checkpoint): weights without the model's "
                       f"architecture, which mcc cannot compile; {_SAVE_ADVICE}", path=path)
    raise MccError(f"holds a {type(data).__name__}, not a model; {_SAVE_ADVICE}", path=path)


def _load_module(path, trust_pickle: bool, input_shapes) -> Graph:
    import torch

    from .torch_export import example_inputs, lower_module

    if not trust_pickle:
        raise MccError("is a pickled Python object (torch.save of a whole nn.Module); unpickling it executes code "
                       "from the file, so mcc refuses it unless you trust the file and pass trust_pickle=True "
                       f"(mcc compile --trust-pickle, with --input-shape); better, {_SAVE_ADVICE}", path=path)
    inputs = example_inputs(input_shapes, path=path, kind="pickled nn.Module")
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # typically the model's class is not importable here
        raise MccError(f"could not be unpickled ({type(e).__name__}: {e}); the module that defines the model's "
                       "class must be importable", path=path) from e
    if not isinstance(module, torch.nn.Module):
        raise MccError(f"holds a {type(module).__name__}, not an nn.Module; {_SAVE_ADVICE}", path=path)
    return lower_module(module, inputs, name=path.stem, path=path)
