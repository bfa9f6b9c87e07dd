"""Issue 19, emulated arm64 (devices/qemu.py): the per-tensor dump both machines write, its comparison, the host
checks that refuse a machine that cannot build the board, and (opt-in, `-m emulated`: the sysroot's first build is
about a minute, the first numba compile under emulation a few more) a zoo int8 model validated on the emulated
board with the same bits as on this host, and the pinned CPU model being the one the board runs."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.devices.qemu import QemuTransport, check_host, diff_dumps, dump, format_comparison
from mcc.errors import MccError
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
    assert set(sources) == {"litert-ref", "litert-default", "mcc:litert-ref", "mcc:litert-xnnpack"}
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


def test_a_host_without_qemu_is_told_what_to_install(tmp_path, monkeypatch, capsys):
    """The real check: a PATH on which qemu-aarch64-static, apt-get and dpkg are not found."""
    (tmp_path / "m.tflite").write_bytes(b"")
    np.savez(tmp_path / "x.npz", x=np.zeros(1, np.float32))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("MCC_CACHE", str(tmp_path / "cache"))
    assert main(["validate", str(tmp_path / "m.tflite"), "--input", str(tmp_path / "x.npz"),
                 "--device", "qemu-arm64"]) == 2
    err = capsys.readouterr().err
    assert "--device qemu-arm64 needs qemu-user-static, apt, dpkg" in err
    assert "sudo apt-get install -y qemu-user-static apt dpkg" in err


def test_too_little_disk_is_refused_before_a_first_build_only(tmp_path):
    """The real free-space check of the cache's file system, against a requirement just above what it has."""
    if shutil.which("qemu-aarch64-static") is None:
        pytest.fail("qemu-user-static is not installed: scripts/setup-dev installs it")
    cache = tmp_path / "cache"
    cache.mkdir()
    need = shutil.disk_usage(cache).free + 2**30
    with pytest.raises(MccError, match=r"building the arm64 sysroot needs about .* GB and .* GB free: free some "
                                       r"space or set MCC_CACHE"):
        check_host(cache, needed_bytes=need)
    (cache / "sysroot").mkdir()
    (cache / "sysroot" / "READY").write_text("{}")
    check_host(cache, needed_bytes=need)   # built already: nothing more to download


def test_unknown_emulated_cpu_is_refused_with_the_choices():
    with pytest.raises(MccError, match=r"unknown emulated CPU 'pentium': name a board \(android-arm64, rpi-zero-2w, "
                                       r"rpi4, rpi5\) or a qemu CPU model \(cortex-a53, cortex-a72"):
        QemuTransport("pentium")
    board = QemuTransport()
    assert (board.cpu, board.cores, board.rules["default"]) == ("cortex-a72", 4, "litert-xnnpack")
    assert QemuTransport("rpi5").cpu == "cortex-a76" and QemuTransport("max").cores == 1


@pytest.mark.emulated
@pytest.mark.parametrize("cpu, dotprod", [("rpi4", False), ("rpi5", True)])
def test_the_emulated_board_runs_the_pinned_cpu(tmp_path, cpu, dotprod):
    """What the arm64 program itself sees: its machine, and the dot product (HWCAP_ASIMDDP, bit 20 of AT_HWCAP)
    only on the Cortex-A76 of an rpi5, not on the Cortex-A72 of an rpi4."""
    board = QemuTransport(cpu)
    script = tmp_path / "hwcap.py"
    script.write_text("import ctypes, platform\nlibc = ctypes.CDLL(None)\nlibc.getauxval.restype = ctypes.c_ulong\n"
                      "print(platform.machine(), bool(libc.getauxval(16) & (1 << 20)))\n")
    try:
        python = board.prepare()
        board.put(script, "hwcap.py")
        p = board.run([*python, "hwcap.py"], 600)
    finally:
        board.close()
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["aarch64", str(dotprod)]


@pytest.mark.emulated
def test_zoo_int8_has_the_same_bits_on_emulated_arm64(tmp_path, capsys):
    """Both LiteRT kernel sets (XNNPACK, as on a Pi 4's Cortex-A72) and mcc's runtime under each rule set compute the
    same bits on arm64 as here, and mcc matches LiteRT there. The sysroot is built on first use (cached after); a
    host that cannot build it fails with why."""
    model, example = ZOO["digits_classifier"]()
    out, x = _int8_tflite(model, example, tmp_path, "digits")
    code = main(["validate", str(out), "--input", str(x), "--device", "qemu-arm64", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], format_comparison(report)
    assert report["cpu"] == "cortex-a72"
    versus = report["arm64_vs_host"]
    assert {"litert-ref", "litert-default", "mcc:litert-ref", "mcc:litert-xnnpack"} <= set(versus)
    for source, v in versus.items():
        assert v["elements"] > 0 and v["differing"] == 0 and not v["missing"], (source, v)
    comparisons = report["arm64_validate"]["comparisons"]
    assert [(c["kernels"], c["rules"]) for c in comparisons] == [("ref", "litert-ref"), ("default", "litert-xnnpack")]
    for c in comparisons:
        assert c["exact"] and c["elements"] > 0 and c["differing"] == 0, c
