""".pt2 archives (torch.export.save): a tiny exported model, its zip members mutated and the zip rebuilt.

A mutation edits the JSON members (models/model.json, data/weights/model_weights_config.json,
data/constants/model_constants_config.json) at a random node of the tree or at the fields the loader trusts (tensor
sizes, strides, storage offsets, dtypes, weight path names, use_pickle flags, call targets, symbolic sizes), changes
a weight member's byte length, renames, removes, duplicates or adds members (a pickle among them), or replaces a
JSON member by non-JSON bytes; the zip is rebuilt with valid CRCs, so the archive reaches the loader rather than
its CRC check. Some inputs instead get raw byte flips of the packed zip. Target: mcc.frontend.load.
"""

from __future__ import annotations

import io
import json
import random
import zipfile

from mcc.frontend import load

from .runner import Reader, flip_bytes, interesting_int

MODEL_JSON, WEIGHTS_JSON, CONSTANTS_JSON = ("models/model.json", "data/weights/model_weights_config.json",
                                            "data/constants/model_constants_config.json")


def build():
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            self.fc = torch.nn.Linear(8, 3)
            self.register_buffer("scale", torch.tensor([0.5, 2.0, 1.0]))

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1)) * self.scale

    torch.manual_seed(0)
    f = io.BytesIO()
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(1, 1, 2, 2),)), f)
    with zipfile.ZipFile(io.BytesIO(f.getvalue())) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    weights = json.loads(next(raw for name, raw in members if name.endswith(WEIGHTS_JSON)))
    return {"members": members, "meta": weights["config"]["conv.weight"]["tensor_meta"]}


# ---- JSON mutations -------------------------------------------------------------------------------------
def _nodes(tree, path=()):
    """Every (path, value) in a JSON tree."""
    yield path, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _nodes(v, path + (i,))


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree[p]
    tree[path[-1]] = value


def _value(rng: random.Random, old):
    choice = rng.randrange(10)
    if choice == 0:
        return None
    if choice == 1:
        return interesting_int(rng, -(1 << 64), 1 << 64) * rng.choice([1, -1])
    if choice == 2:
        return rng.choice([0, 1, 2, 3, 5, 7, 8, 9, 11, 13, 99])
    if choice == 3:
        return rng.choice(["", "weight_0", "weight_9", "../weight_0", "/etc/passwd", "x" * 300, "s0", "s0 + 1",
                           "__import__('os').system('true')", "torch.ops.aten.add.Tensor", "builtins.eval",
                           "torch.ops.aten.relu.default", "\u00e9", "weight_0\x00"])
    if choice == 4:
        return rng.choice([True, False])
    if choice == 5:
        return rng.choice([[], [1], [None], {}, {"as_int": -1}, {"as_sym_int": {"as_name": "s0"}},
                           {"as_expr": {"expr_str": "s0*2"}}, {"as_int": 1 << 40}])
    if choice == 6:
        return rng.choice([0.5, -1.0, 1e300, float("nan"), float("inf")])
    if choice == 7 and isinstance(old, int) and not isinstance(old, bool):
        return old + rng.choice([-1, 1, 1 << 31, -(1 << 31)])
    if choice == 8 and isinstance(old, str):
        return old[:rng.randrange(len(old) + 1)] + rng.choice(["", "_", ".", "1"])
    if choice == 8 or isinstance(old, list) and all(isinstance(v, int) for v in old):
        return rng.choice([[0, 0], [-1, -1], [1], [1 << 40, 1], [3, 3, 3], [], [2, 2]])
    if choice == 9 and isinstance(old, str) and old.startswith("torch.ops."):
        return "torch.ops.aten." + rng.choice(["add.Tensor", "max_pool2d.default", "view.default", "cumsum.default",
                                               "mean.dim", "cat.default", "conv2d.default", "linear.default",
                                               "nope.default"])
    return rng.choice([{}, [], "", 0])


_FOCUS = ("sizes", "strides", "storage_offset", "dtype", "path_name", "use_pickle", "target", "as_int", "layout",
          "as_tensor", "name", "inputs", "outputs", "config", "tensor_values", "schema_version", "kind", "device",
          "as_ints", "as_float", "as_bool", "arg", "start_dim")


def _mutate_json(raw: bytes, rng: random.Random) -> bytes:
    try:
        tree = json.loads(raw)
    except ValueError:
        return flip_bytes(raw, rng)
    nodes = [(p, v) for p, v in _nodes(tree) if p]
    if not nodes:
        return rng.choice([b"[]", b"null", b"{}", b"{\"config\": 5}"])
    focus = [(p, v) for p, v in nodes if isinstance(p[-1], str) and p[-1] in _FOCUS]
    path, old = rng.choice(focus) if focus and rng.random() < 0.8 else rng.choice(nodes)
    parent = tree
    for p in path[:-1]:
        parent = parent[p]
    choice = rng.randrange(6)
    if choice <= 2:
        _set(tree, path, _value(rng, old))
    elif choice == 3:
        del parent[path[-1]]
    elif choice == 4 and isinstance(parent, list):
        parent.insert(path[-1], parent[path[-1]])
    elif choice == 4:
        parent[rng.choice(["extra", "use_pickle", "path_name", "sizes"])] = _value(rng, None)
    elif isinstance(old, list) and old:
        del old[rng.randrange(len(old))]
    else:
        _set(tree, path, _value(rng, old))
    out = json.dumps(tree)
    if rng.random() < 0.05:
        out = out[:rng.randrange(len(out) + 1)]
    return out.encode()


# ---- archive mutations ----------------------------------------------------------------------------------
# A pickle naming os.system (it only looks the function up, never calls it): what the loader must refuse unread.
_PICKLE = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94."


def generate(seeds, rng: random.Random) -> bytes:
    members = [list(m) for m in seeds["members"]]
    root = members[0][0].split("/", 1)[0] + "/"
    for _ in range(rng.choice([1, 1, 2, 3])):
        choice = rng.randrange(14)
        by_tail = {name[len(root):]: k for k, (name, _) in enumerate(members) if name.startswith(root)}
        if choice <= 3 and MODEL_JSON in by_tail:
            k = by_tail[MODEL_JSON]
            members[k][1] = _mutate_json(members[k][1], rng)
        elif choice <= 6 and WEIGHTS_JSON in by_tail:
            k = by_tail[WEIGHTS_JSON]
            members[k][1] = _mutate_json(members[k][1], rng)
        elif choice == 7 and CONSTANTS_JSON in by_tail:
            k = by_tail[CONSTANTS_JSON]
            raw = members[k][1]
            if rng.random() < 0.5:   # a constant that needs a pickle, or a weight member reused as a constant
                entry = {"path_name": rng.choice(["weight_0", "constant_0", "../models/model.json"]),
                         "is_param": False, "use_pickle": rng.random() < 0.5, "tensor_meta": seeds["meta"]}
                raw = json.dumps({"config": {"scale2": entry}}).encode()
            members[k][1] = _mutate_json(raw, rng)
        elif choice == 8:   # a weight's bytes cut or extended
            weights = [k for t, k in by_tail.items() if t.startswith("data/weights/weight_")]
            if weights:
                k = rng.choice(weights)
                raw = members[k][1]
                cut = rng.random() < 0.6
                members[k][1] = raw[:rng.randrange(len(raw) + 1)] if cut else raw + bytes(rng.choice([1, 4, 64]))
        elif choice == 9 and members:
            k = rng.randrange(len(members))
            members[k][0] = rng.choice([root + "data/weights/weight_9", root + "models/other.json",
                                        "x/" + members[k][0], members[k][0] + "_", root + "data/constants/constant_0",
                                        rng.choice(members)[0], root + "../evil", members[k][0].upper()])
        elif choice == 10 and members:
            del members[rng.randrange(len(members))]
        elif choice == 11:
            members.append([root + rng.choice(["data/weights/weight_9", "data/constants/constant_0",
                                                "data/sample_inputs/model.pt", "data.pkl", "models/model.json"]),
                            rng.choice([_PICKLE, b"", rng.randbytes(16), b"{}"])])
        elif choice == 12 and members:
            k = rng.randrange(len(members))
            members[k][1] = rng.choice([b"", b"not json", _PICKLE, rng.randbytes(32)])
        elif members:
            k = rng.randrange(len(members))
            members.append(list(members[k]))
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, raw in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), raw)
    data = f.getvalue()
    if rng.random() < 0.05:
        data = flip_bytes(data, rng)
    return data


READER = Reader("pt2", ".pt2", build, generate, (("load", lambda data, path: load(path)),))
