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

    from .torch_export import example_inputs, lower_module

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        data = None  # it references Python classes: a pickled object, most likely an nn.Module
    except Exception as e:
        raise MccError(f"could not be read as a torch.save file ({type(e).__name__}: {e})", path=path) from e
    if isinstance(data, Mapping):
        raise MccError(f"holds only a dict of tensors (a state_dict or checkpoint): weights without the model's "
                       f"architecture, which mcc cannot compile; {_SAVE_ADVICE}", path=path)
    if data is not None:
        raise MccError(f"holds a {type(data).__name__}, not a model; {_SAVE_ADVICE}", path=path)
    if not trust_pickle:
        raise MccError("is a pickled Python object (torch.save of a whole nn.Module); unpickling it executes code "
                       "from the file, so mcc refuses it unless you trust the file and pass trust_pickle=True "
                       f"(with input_shapes); better, {_SAVE_ADVICE}", path=path)
    if input_shapes is None:
        raise MccError("is a pickled nn.Module, which does not record input shapes: pass input_shapes, "
                       "e.g. input_shapes=[(1, 3, 224, 224)] (one shape per model input)", path=path)
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # typically the model's class is not importable here
        raise MccError(f"could not be unpickled ({type(e).__name__}: {e}); the module that defines the model's "
                       f"class must be importable", path=path) from e
    if not isinstance(module, torch.nn.Module):
        raise MccError(f"holds a {type(module).__name__}, not an nn.Module; {_SAVE_ADVICE}", path=path)
    return lower_module(module, example_inputs(input_shapes), name=path.stem, path=path)
