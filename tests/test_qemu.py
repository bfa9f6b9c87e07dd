"""Issue 19, emulated arm64 (devices/qemu.py): the host checks that refuse a machine that cannot build the board,
and (opt-in, `-m emulated`: the sysroot's first build takes a minute or two, the first numba compile under
emulation a few more) the pinned CPU model being the one the board runs, and a zoo int8 model and a float one
(every float conv tile kernel, 4 NEON lanes there) validated on the emulated board (devices/remote.py's flow, as
over SSH): int8 with the same bits as on this host, float within validate's tolerance."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mcc.cli import main
from mcc.devices.qemu import QemuTransport, check_host
from mcc.devices.remote import format_device_report
from mcc.errors import MccError
from mcc.examples.zoo import ZOO

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mobilenet_v2_style_int8.tflite"


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


def test_unknown_device_is_refused(tmp_path, capsys):
    (tmp_path / "m.tflite").write_bytes(b"")
    np.savez(tmp_path / "x.npz", x=np.zeros(1, np.float32))
    assert main(["validate", str(tmp_path / "m.tflite"), "--input", str(tmp_path / "x.npz"),
                 "--device", "toaster"]) == 2
    assert "unknown device 'toaster'" in capsys.readouterr().err


def test_a_host_without_qemu_is_told_what_to_install(tmp_path, monkeypatch, capsys):
    """The real check: a PATH on which qemu-aarch64-static, apt-get and dpkg are not found."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("MCC_CACHE", str(tmp_path / "cache"))
    assert main(["validate", str(EXAMPLE), "--input", str(EXAMPLE.with_name("mobilenet_v2_style_samples.npz")),
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


def _fp32_tflite(tmp_path):
    """The example MobileNetV2-style .pt2 (dense and depthwise convs: every float conv tile kernel, whose vector
    width follows the CPU, 4 lanes on NEON) compiled to arm-fp32, and inputs for it."""
    out = tmp_path / "mobilenet_v2_style.tflite"
    assert main(["compile", str(EXAMPLE.with_name("mobilenet_v2_style.pt2")), "--target", "arm-fp32", "-o", str(out),
                 "-q"]) == 0
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32))
    return out, tmp_path / "x.npz"


@pytest.mark.emulated
@pytest.mark.parametrize("number_format", ["int8", "fp32"])
def test_zoo_model_has_the_same_bits_on_emulated_arm64(tmp_path, capsys, number_format):
    """Both LiteRT kernel sets (XNNPACK as on a Pi 4's Cortex-A72) and mcc's runtime compute the same bits on arm64 as
    here, and mcc matches LiteRT there. The sysroot is built on first use (cached after); a host that cannot build
    it fails with why."""
    if number_format == "int8":
        model, example = ZOO["digits_classifier"]()
        out, x = _int8_tflite(model, example, tmp_path, "digits")
    else:
        out, x = _fp32_tflite(tmp_path)
    code = main(["validate", str(out), "--input", str(x), "--device", "qemu-arm64", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["ok"], format_device_report(r)
    assert r["via"] == "qemu-arm64 (cortex-a72)" and r["board"]["isa"] == "aarch64" and r["host"]["isa"] == "x86_64"
    assert [c["engine"] for c in r["board_vs_host"]] == ["litert-ref", "litert-default", "mcc-ref", "mcc-default"]
    for c in r["board_vs_host"]:
        assert c["elements"] > 0 and c["differing"] == 0, c
    comparisons = r["on_board"]["comparisons"]
    assert [(c["kernels"], c["rules"]) for c in comparisons] == [("ref", "litert-ref"), ("default", "litert-xnnpack")]
    for c in comparisons:
        # float tensors are compared within validate.FLOAT_TOLERANCE of their range, int8 ones bit for bit
        assert c["exact"] == (number_format == "int8") and c["elements"] > 0 and c["differing"] == 0, c
