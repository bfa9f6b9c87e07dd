"""Device profiles, `mcc devices`, `mcc compile --device`, `mcc bench` and the SSH transport (issue 19).

The SSH tests start a real OpenSSH server on loopback (Debian's openssh-server; /usr/sbin/sshd) with a generated
host key and an authorized key for the current user, and tear it down."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mcc.cli import main
from mcc.devices.profiles import get_profile, memory_check, profiles


def test_profiles_hold_every_board_with_its_facts():
    known = profiles()
    for name in ("rpi4", "rpi5", "rpi-zero-2w", "android-arm64", "x86-64", "cortex-m7"):
        p = get_profile(name)
        assert {"cpu", "cores", "isa", "features", "rules", "reach", "macs_per_s", "ram_bytes"} <= set(p), name
    assert "dotprod" in known["rpi5"]["features"] and "dotprod" not in known["rpi4"]["features"]
    assert known["rpi-zero-2w"]["ram_bytes"] == 512 * 2**20 and known["cortex-m7"]["reach"] == []


def test_devices_lists_boards_and_how_each_is_reached(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name, p in profiles().items():
        assert f"{name}: {p['description']}" in out
    assert "Cortex-A72" in out and "ssh (real board: --host user@host)" in out
    assert "none: size and arena checks only" in out


def _wide_onnx(path, n):
    """x[1, n] @ W[n, n]: a float model of 4 n^2 bytes of weights."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "wide",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def test_compile_device_warns_when_the_model_will_not_fit(tmp_path, capsys):
    src = tmp_path / "wide.onnx"
    _wide_onnx(src, 600)  # 1.44 MB of weights: more than the Cortex-M7's 1 MiB flash, far less than an rpi4's RAM
    out = tmp_path / "wide.tflite"
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "--device", "cortex-m7"]) == 0
    err = capsys.readouterr().err
    size = out.stat().st_size
    assert size > 2**20
    assert f"will not fit cortex-m7: model needs {size:,} bytes of flash and the device has 1,048,576" in err
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "--device", "rpi4"]) == 0
    captured = capsys.readouterr()
    assert "will not fit" not in captured.err and "fits rpi4:" in captured.out
    assert memory_check(get_profile("rpi4"), size, 0)["fits"]
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "--device", "rpi9"]) == 2
    assert "unknown device 'rpi9'" in capsys.readouterr().err
