"""PyTorch suites: a module and an example input, exported with torch.export to a .pt2 and compiled to all four
targets from that file, as a user would.

Weights are torch's default initialisation under torch.manual_seed(0), the module in eval mode; inputs are seeded
samples in the example's shape (standard normal, or ids for integer inputs): 8 to calibrate the int8 targets, 2
(other seed) to evaluate.
Float cells: max|err| / output range within 1e-4 of torch's outputs. Int8 cells: common.int8_cell against
torch's outputs.

pytorchcv: CNN families from pytorchcv 0.0.74's model definitions (classification, detection and pose,
segmentation), each at a small variant and its smallest natural input. The modules are imported directly:
pytorchcv.model_provider imports every family, one of which needs torchvision, which does not import beside the
CPU torch. handwritten: tests/handwritten_models.py's MODELS, when that file exists.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import COLUMNS, Case, Cell, first_line, float_cell, guarded, int8_cell, range_judge, relative_error

CALIBRATION_SAMPLES, EVAL_SAMPLES = 8, 2
PYTORCHCV = "pip install --no-deps pytorchcv==0.0.74"

# family -> (pytorchcv.models module, constructor, keyword arguments, input height and width)


def sized(module: str, fn: str, size: tuple[int, int], **kwargs):
    """A family whose constructor takes the input size (segmentation and detection models default to 1024x2048
    or 512x512); the classifiers' input size is fixed by their final pooling."""
    return module, fn, {**kwargs, "in_size": size}, size


CLASSIFICATION = {
    "resnet-cifar": ("resnet_cifar", "resnet20_cifar10", {}, (32, 32)),
    "preresnet-cifar": ("preresnet_cifar", "preresnet20_cifar10", {}, (32, 32)),
    "seresnet-cifar": ("seresnet_cifar", "seresnet20_cifar10", {}, (32, 32)),
    "sepreresnet-cifar": ("sepreresnet_cifar", "sepreresnet20_cifar10", {}, (32, 32)),
    "resnext-cifar": ("resnext_cifar", "resnext20_16x4d_cifar10", {}, (32, 32)),
    "densenet-cifar": ("densenet_cifar", "densenet40_k12_cifar10", {}, (32, 32)),
    "xdensenet-cifar": ("xdensenet_cifar", "xdensenet40_2_k24_bc_cifar10", {}, (32, 32)),
    "nin-cifar": ("nin_cifar", "nin_cifar10", {}, (32, 32)),
    "ror-cifar": ("ror_cifar", "ror3_56_cifar10", {}, (32, 32)),
    "diaresnet-cifar": ("diaresnet_cifar", "diaresnet20_cifar10", {}, (32, 32)),
    "shakeshakeresnet-cifar": ("shakeshakeresnet_cifar", "shakeshakeresnet20_2x16d_cifar10", {}, (32, 32)),
    "pyramidnet-cifar": ("pyramidnet_cifar", "pyramidnet110_a48_cifar10", {}, (32, 32)),
    "msdnet-cifar": ("msdnet_cifar10", "msdnet22_cifar10", {}, (32, 32)),
    "mobilenet": ("mobilenet", "mobilenet_wd4", {}, (224, 224)),
    "fdmobilenet": ("fdmobilenet", "fdmobilenet_wd4", {}, (224, 224)),
    "mobilenetv2": ("mobilenetv2", "mobilenetv2_wd4", {}, (224, 224)),
    "mobilenetv3": ("mobilenetv3", "mobilenetv3_small_w7d20", {}, (224, 224)),
    "shufflenet": ("shufflenet", "shufflenet_g1_wd4", {}, (224, 224)),
    "shufflenetv2": ("shufflenetv2", "shufflenetv2_wd2", {}, (224, 224)),
    "shufflenetv2b": ("shufflenetv2b", "shufflenetv2b_wd2", {}, (224, 224)),
    "squeezenet": ("squeezenet", "squeezenet_v1_1", {}, (224, 224)),
    "squeezeresnet": ("squeezenet", "squeezeresnet_v1_1", {}, (224, 224)),
    "squeezenext": ("squeezenext", "sqnxt23_w1", {}, (224, 224)),
    "menet": ("menet", "menet108_8x1_g3", {}, (224, 224)),
    "igcv3": ("igcv3", "igcv3_wd4", {}, (224, 224)),
    "mnasnet": ("mnasnet", "mnasnet_small", {}, (224, 224)),
    "ghostnet": ("ghostnet", "ghostnet", {}, (224, 224)),
    "efficientnet": ("efficientnet", "efficientnet_b0", {}, (224, 224)),
    "mixnet": ("mixnet", "mixnet_s", {}, (224, 224)),
    "proxylessnas": ("proxylessnas", "proxylessnas_mobile", {}, (224, 224)),
    "fbnet": ("fbnet", "fbnet_cb", {}, (224, 224)),
    "spnasnet": ("spnasnet", "spnasnet", {}, (224, 224)),
    "hardnet": ("hardnet", "hardnet39ds", {}, (224, 224)),
    "peleenet": ("peleenet", "peleenet", {}, (224, 224)),
    "channelnet": ("channelnet", "channelnet", {}, (224, 224)),
    "regnet": ("regnet", "regnetx002", {}, (224, 224)),
    "resnet": ("resnet", "resnet18_wd4", {}, (224, 224)),
    "condensenet": ("condensenet", "condensenet74_c4_g4", {}, (224, 224)),
    "darts": ("darts", "darts", {}, (224, 224)),
    "espnetv2": ("espnetv2", "espnetv2_wd2", {}, (224, 224)),
    "dicenet": ("dicenet", "dicenet_wd5", {}, (224, 224)),
}
SEGMENTATION = {
    "fastscnn": sized("fastscnn", "fastscnn_cityscapes", (64, 128), aux=False, fixed_size=True),
    "cgnet": sized("cgnet", "cgnet_cityscapes", (64, 128)),
    "enet": sized("enet", "enet_cityscapes", (64, 128)),
    "erfnet": sized("erfnet", "erfnet_cityscapes", (64, 128)),
    "lednet": sized("lednet", "lednet_cityscapes", (64, 128)),
    "dabnet": sized("dabnet", "dabnet_cityscapes", (64, 128)),
    "edanet": sized("edanet", "edanet_cityscapes", (64, 128)),
    "fpenet": sized("fpenet", "fpenet_cityscapes", (64, 128)),
    "sinet": sized("sinet", "sinet_cityscapes", (128, 256)),
    "contextnet": sized("contextnet", "ctxnet_cityscapes", (64, 128)),
    "linknet": sized("linknet", "linknet_cityscapes", (64, 128)),
}
DETECTION = {
    "centernet": sized("centernet", "centernet_resnet18_voc", (128, 128)),
    "lffd": sized("lffd", "lffd20x5s320v2_widerface", (128, 128)),
    "simplepose": sized("simplepose_coco", "simplepose_resnet18_coco", (128, 96)),
    "simplepose-mobile": sized("simpleposemobile_coco", "simplepose_mobile_mobilenetv2b_w1_coco", (128, 96)),
    "lwopenpose": sized("lwopenpose_cmupan", "lwopenpose2d_mobilenet_cmupan_coco", (128, 96)),
}
TASKS = {"classification": CLASSIFICATION, "segmentation": SEGMENTATION, "detection/pose": DETECTION}
QUICK = ("resnet-cifar", "mobilenetv2", "fastscnn", "centernet")


def require_pytorchcv():
    """pytorchcv, or SystemExit saying how to install it (it is not a dependency in pyproject.toml)."""
    try:
        import pytorchcv  # noqa: F401
    except ImportError:
        raise SystemExit(f"the pytorchcv suite needs pytorchcv: {PYTORCHCV}") from None


def pytorchcv_cases(quick: bool) -> list[Case]:
    require_pytorchcv()
    cases = []
    for task, families in TASKS.items():
        for family, (module, fn, kwargs, size) in families.items():
            if not quick or family in QUICK:
                cases.append(Case("pytorchcv", f"{family} ({fn}, {size[0]}x{size[1]})", f"torch ({task})",
                                  {"module": module, "fn": fn, "kwargs": kwargs, "size": size}))
    return sorted(cases, key=lambda c: c.name)


def build_pytorchcv(payload):
    import torch

    constructor = getattr(importlib.import_module(f"pytorchcv.models.{payload['module']}"), payload["fn"])
    return constructor(**payload["kwargs"]), torch.zeros(1, 3, *payload["size"])


HANDWRITTEN = Path(__file__).resolve().parents[2] / "tests" / "handwritten_models.py"


def handwritten_models() -> dict:
    """tests/handwritten_models.py's MODELS (name -> zero-argument builder of (module, example input))."""
    sys.path.insert(0, str(HANDWRITTEN.parent))
    try:
        return importlib.import_module("handwritten_models").MODELS
    finally:
        sys.path.remove(str(HANDWRITTEN.parent))


def handwritten_cases(quick: bool) -> list[Case]:
    names = sorted(handwritten_models())
    return [Case("handwritten", name, "torch", {"name": name}) for name in (names[:2] if quick else names)]


def build_handwritten(payload):
    return handwritten_models()[payload["name"]]()


def run_torch_case(case: Case, build):
    """Export `build(case.payload)` to a .pt2 and yield its four cells."""
    import torch

    from mcc.compiler import compile_model
    from mcc.onnx_backend import MccRep

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mcc-coverage-") as folder:
        source = Path(folder) / "model.pt2"
        try:
            model, example = build(case.payload)
            model.eval()
            with torch.no_grad():
                torch.export.save(torch.export.export(model, (example,)), source)
        except Exception as e:  # torch's own limits: the row says so in every column
            message = first_line(f"torch.export failed: {type(e).__name__}: {e}")
            yield from ((c, Cell("refused", message)) for c in COLUMNS)
            return
        shape = tuple(example.shape)
        calib, samples = (samples_like(example, n * shape[0], seed).reshape(n, *shape)
                          for seed, n in ((0, CALIBRATION_SAMPLES), (1, EVAL_SAMPLES)))
        expected = [_torch_outputs(model, s) for s in samples]
        np.savez(Path(folder) / "calib.npz", x=calib.reshape(-1, *shape[1:]))
        data_sets = [([s], e) for s, e in zip(samples, expected)]
        float64: dict = {}

        def judged(rep):
            return conditioned(float_cell(rep, data_sets, range_judge(1e-4)), rep, model, samples, expected, float64)

        def compiled(target):
            if target.endswith("int8"):
                result = compile_model(source, target, calib=Path(folder) / "calib.npz")
            else:
                result = compile_model(source, target)
            return MccRep(result, target)

        for column in COLUMNS:
            if column.endswith("int8"):
                yield guarded(column, lambda: int8_cell(compiled(column), [[s] for s in samples], expected, ["x"]))
            else:
                yield guarded(column, lambda: judged(compiled(column)))


def conditioned(cell: Cell, rep, model, samples, expected, cache: dict) -> Cell:
    """A float cell outside 1e-4 of torch's float32 output, judged again against float64 when torch's own float32
    result is further than 1e-4 from it: random weights make some models (pytorchcv menet, igcv3) amplify rounding
    so much that two correct float32 evaluations in different summation orders disagree by 1e-3. Such a cell passes
    when mcc's error against float64 is at most twice torch float32's (two independent roundings), and says so."""
    if cell.status != "wrong" or "(>" not in cell.text:
        return cell
    if "refs" not in cache:
        cache["refs"] = _float64_outputs(model, samples)
    if cache["refs"] is None:
        return cell
    outs = [list(rep.run([s])) for s in samples]
    ours = max(relative_error(o, r) for os_, rs in zip(outs, cache["refs"]) for o, r in zip(os_, rs))
    torchs = max(relative_error(o, r) for os_, rs in zip(expected, cache["refs"]) for o, r in zip(os_, rs))
    figures = f"against float64: mcc {ours:.1e}, torch float32 {torchs:.1e}"
    if torchs > 1e-4 and ours <= 2 * torchs:
        return Cell("pass", f"{cell.text.split(' (>')[0]} ({figures})")
    return Cell("wrong", f"{cell.text}; {figures}")


def _float64_outputs(model, samples):
    """The model's outputs in float64 on a copy of it, or None for a model that does not run in float64."""
    import copy

    import torch

    try:
        twin = copy.deepcopy(model).double()
        with torch.no_grad():
            return [[t.numpy() for t in torch.utils._pytree.tree_leaves(twin(torch.from_numpy(s).double()))]
                    for s in samples]
    except Exception:  # integer inputs (token ids) and ops without float64 kernels: no second opinion
        return None


def samples_like(example, n: int, seed: int) -> np.ndarray:
    """n samples of the example's kind, batch first: standard normal for an activation, ids up to the example's
    largest for integer indices (token ids)."""
    rng = np.random.default_rng(seed)
    if example.dtype.is_floating_point:
        return rng.standard_normal((n,) + tuple(example.shape[1:])).astype(np.float32)
    return rng.integers(0, int(example.max()) + 1, (n,) + tuple(example.shape[1:])).astype(example.numpy().dtype)


def _torch_outputs(model, x: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x))
    leaves = torch.utils._pytree.tree_leaves(out)
    return [t.numpy() for t in leaves]
