"""Issue 19, emulated arm64 (devices/qemu.py): the per-tensor dump both machines write, its comparison, and (slow)
a zoo int8 model validated on the emulated board with the same bits as on this host."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.devices.qemu import diff_dumps, dump, format_comparison
from mcc.examples.zoo import ZOO


def _int8_tflite(model, example, tmp_path, name):
    src = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((16, *example.shape[1:])).astype(np.float32))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((3 * example.shape[0], *example.shape[1:])).astype(np.float32))
    out = tmp_path / f"{name}.int8.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"), "-o", str(out),
                 "-q", "--require-int8"]) == 0
    return out, tmp_path / "x.npz"


def test_dump_holds_every_tensor_of_each_kernel_set_and_diff_counts_each_element(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    out, x = _int8_tflite(model, torch.randn(1, 3, 8, 8), tmp_path, "tiny")
    first, again = dump(out, x), dump(out, x)
    sources = diff_dumps(first, again)
    assert set(sources) == {"litert-ref", "litert-default", "mcc:litert-ref", "mcc:litert-xnnpack",
                            "mcc:litert-xnnpack-aarch64"}
    for v in sources.values():
        assert v["elements"] > 0 and v["differing"] == 0 and not v["missing"]
    conv = next(k for k in first if k.startswith("mcc:litert-ref|") and first[k].dtype == np.int8)
    assert len(first[conv]) == 3   # all samples, batch first
    changed = dict(first)
    changed[conv] = first[conv].copy()
    changed[conv].flat[0] ^= 1
    del changed[next(k for k in first if k.startswith("litert-ref|"))]
    sources = diff_dumps(changed, again)
    assert sources["mcc:litert-ref"]["differing"] == 1
    assert sources["mcc:litert-ref"]["differing_tensors"] == {conv.split("|", 1)[1]: 1}
    assert len(sources["litert-ref"]["missing"]) == 1 and sources["mcc:litert-xnnpack"]["differing"] == 0


def test_unknown_device_is_refused(tmp_path, capsys):
    (tmp_path / "m.tflite").write_bytes(b"")
    np.savez(tmp_path / "x.npz", x=np.zeros(1, np.float32))
    assert main(["validate", str(tmp_path / "m.tflite"), "--input", str(tmp_path / "x.npz"),
                 "--device", "toaster"]) == 2
    assert "unknown device 'toaster'" in capsys.readouterr().err


@pytest.mark.emulated
def test_zoo_int8_has_the_same_bits_on_emulated_arm64(tmp_path, capsys):
    """The rootfs is built on first use (minutes; cached after); a host that cannot build it fails with why."""
    model, example = ZOO["digits_classifier"]()
    out, x = _int8_tflite(model, example, tmp_path, "digits")
    # LiteRT's reference kernels: XNNPACK computes otherwise on aarch64 (runtime/rules.py, litert-xnnpack-aarch64)
    code = main(["validate", str(out), "--input", str(x), "--device", "qemu-arm64", "--kernels", "ref", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], format_comparison(report)
    versus = report["arm64_vs_host"]
    assert set(versus) == {"litert-ref", "mcc:litert-ref"}
    for source, v in versus.items():
        assert v["elements"] > 0 and v["differing"] == 0 and not v["missing"], (source, v)
    [c] = report["arm64_validate"]["comparisons"]
    assert c["kernels"] == "ref" and c["exact"] and c["elements"] > 0 and c["differing"] == 0
