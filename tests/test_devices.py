"""Device profiles, `mcc devices`, `mcc compile --device`, `mcc bench` and the SSH transport (issue 19).

The SSH tests start a real OpenSSH server on loopback (Debian's openssh-server; /usr/sbin/sshd) with a generated
host key and an authorized key for the current user, and tear it down."""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mcc.cli import main
from mcc.devices.profiles import get_profile, memory_check, profiles
from mcc.ir.stats import totals
from mcc.validate import read_compiled


def test_profiles_hold_every_board_with_its_facts():
    known = profiles()
    for name in ("rpi4", "rpi5", "rpi-zero-2w", "android-arm64", "x86-64", "cortex-m7"):
        p = get_profile(name)
        assert {"cpu", "cores", "isa", "features", "rules", "reach", "macs_per_s", "ram_bytes"} <= set(p), name
    assert "dotprod" in known["rpi5"]["features"] and "dotprod" not in known["rpi4"]["features"]
    assert known["rpi-zero-2w"]["ram_bytes"] == 512 * 2**20 and known["cortex-m7"]["reach"] == []


def test_the_wheel_ships_one_profile_file_per_board(tmp_path):
    """The profiles are package data: a board's install (mcc's wheel, as the SSH path builds it) holds them all."""
    import zipfile

    from mcc.devices.transport import build_wheel

    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    assert {f"mcc/devices/profiles/{board}.toml" for board in profiles()} <= names
    assert len(profiles()) == 6


def test_devices_lists_boards_and_how_each_is_reached(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name, p in profiles().items():
        assert f"{name}: {p['description']}" in out
    assert "Cortex-A72" in out and "ssh (real board: --host user@host)" in out
    assert "none: size and arena checks only" in out
    assert "(emulated: --device qemu-arm64 --cpu rpi5: qemu's cortex-a76)" in out


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


# ---- mcc bench, here ----------------------------------------------------------------------------------------------
ZOO_INT8 = Path(__file__).resolve().parents[1] / "examples" / "mobilenet_v2_style_int8.tflite"
ZOO_SAMPLES = ZOO_INT8.with_name("mobilenet_v2_style_samples.npz")


def test_runner_tensors_hold_every_tensor_and_compare_runs_counts_each_element(tmp_path):
    """The job the board and this host both run (the runner's tensors task, through LocalTransport here) and the
    comparison of its results: every operator output of every engine on all samples; one flipped code is one
    differing element of that tensor and engine."""
    from mcc.devices.remote import compare_runs, run_job
    from mcc.devices.transport import LocalTransport

    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.load(ZOO_SAMPLES)["x"][:2])
    for side in ("a", "b"):
        run_job(LocalTransport(), ZOO_INT8, inputs, ["tensors"], tmp_path / side, {})
    with np.load(tmp_path / "a" / "tensors.npz") as a, np.load(tmp_path / "b" / "tensors.npz") as b:
        first, again = dict(a), dict(b)
    graph = read_compiled(ZOO_INT8)[2]
    every = sum(o.size for n in graph.nodes for o in n.outputs)
    runs = compare_runs(first, again)
    assert [c["engine"] for c in runs] == ["litert-ref", "litert-default", "mcc-ref", "mcc-default"]
    assert all(c["differing"] == 0 and c["elements"] == 2 * every for c in runs)
    key = next(k for k in first if k.startswith("mcc-ref/") and first[k].dtype == np.int8)
    first[key] = first[key].copy()
    first[key].flat[0] ^= 1
    runs = {c["engine"]: c for c in compare_runs(first, again)}
    assert runs["mcc-ref"]["differing"] == 1 and runs["mcc-default"]["differing"] == 0
    assert [t["tensor"] for t in runs["mcc-ref"]["tensors"] if t["differing"]] == [key.split("/", 1)[1]]


@pytest.mark.slow
def test_bench_times_litert_and_mcc_on_a_zoo_int8_file(capsys):
    assert main(["bench", str(ZOO_INT8), "--device", "x86-64", "--threads", "1,2", "--runs", "5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["macs"] == totals(read_compiled(ZOO_INT8)[2])["macs"] > 0
    assert [(row["engine"], row["threads"]) for row in r["rows"]] == [("litert", 1), ("litert", 2), ("mcc", 1),
                                                                       ("mcc", 2)]
    for row in r["rows"]:
        assert row["runs"] == 5 and 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["max_ms"]
        assert row["peak_rss_bytes"] >= row["rss_before_bytes"] > 0
    assert r["estimate_ms"] == {"1": pytest.approx(r["macs"] / 2e10 * 1e3), "2": pytest.approx(r["macs"] / 4e10 * 1e3)}
    assert r["machine"]["isa"] == platform.machine() and not r["emulated"]


def test_bench_refuses_a_board_without_a_way_to_reach_it(capsys):
    assert main(["bench", str(ZOO_INT8), "--device", "rpi4"]) == 2
    assert "device 'rpi4' is reached by ssh, qemu-arm64: add --host user@host" in capsys.readouterr().err
    assert main(["bench", str(ZOO_INT8), "--threads", "1,x"]) == 2
    assert "--threads takes thread counts" in capsys.readouterr().err


# ---- the SSH path, against a real OpenSSH server on loopback --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


def _client_config(tmp: Path, port: int, key: Path) -> Path:
    cfg = tmp / f"ssh_config_{key.name}"
    cfg.write_text(f"Host mcc-loopback\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
                   f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {tmp}/known_hosts\n"
                   f"  StrictHostKeyChecking no\n  LogLevel ERROR\n")
    return cfg


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """/usr/sbin/sshd -D on a free loopback port with a generated host key and the current user's authorized key;
    yields (ssh config for host 'mcc-loopback', folder)."""
    if not Path("/usr/sbin/sshd").is_file():
        pytest.fail("the SSH tests need OpenSSH's server: apt-get install -y openssh-server")
    tmp = tmp_path_factory.mktemp("sshd")
    _keygen(tmp / "host_key")
    _keygen(tmp / "id")
    (tmp / "authorized_keys").write_text((tmp / "id.pub").read_text())
    port = _free_port()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp}/host_key\nPidFile {tmp}/sshd.pid\n"
        f"AuthorizedKeysFile {tmp}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n")
    if os.geteuid() == 0:  # root's sshd wants its privilege separation folder (the service makes it normally)
        Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_config"), "-p", str(port)],
                            stderr=open(tmp / "sshd.log", "wb"))
    cfg = _client_config(tmp, port, tmp / "id")
    for _ in range(100):
        if subprocess.run(["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "mcc-loopback", "true"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"sshd did not come up: {(tmp / 'sshd.log').read_text()}")
    yield cfg, tmp
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_validate_over_ssh_compares_board_and_host_per_tensor(sshd, tmp_path, capsys):
    cfg, tmp = sshd
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.load(ZOO_SAMPLES)["x"][:6])
    board_dir = tmp / "board"
    argv = ["validate", str(ZOO_INT8), "--input", str(inputs), "--device", "rpi4", "--host", "mcc-loopback",
            "--ssh-config", str(cfg), "--python", sys.executable, "--remote-dir", str(board_dir), "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    graph = read_compiled(ZOO_INT8)[2]
    produced = {o.name for n in graph.nodes for o in n.outputs}
    assert [c["engine"] for c in r["board_vs_host"]] == ["litert-ref", "litert-default", "mcc-ref", "mcc-default"]
    for c in r["board_vs_host"]:
        assert c["differing"] == 0 and produced == {t["tensor"] for t in c["tensors"]}, c["engine"]
        assert c["elements"] == 6 * sum(o.size for n in graph.nodes for o in n.outputs)  # every sample, every tensor
    assert [(c["kernels"], c["differing"]) for c in r["on_board"]["comparisons"]] == [("ref", 0), ("default", 0)]
    assert r["on_board"]["samples"] == 6 and r["ok"] and r["via"] == "ssh mcc-loopback"
    # the board ran the wheel mcc installed in its venv, not this checkout
    installed = subprocess.run(["ssh", "-F", str(cfg), "mcc-loopback", f"cd / && {board_dir}/venv/bin/python -c "
                                "'import mcc; print(mcc.__file__)'"], capture_output=True, text=True)
    assert str(board_dir / "venv") in installed.stdout
    assert not list(board_dir.glob("job.*"))  # job folders are removed, the venv stays
    # a second run reuses the venv: the source stamp matches
    stamp = (board_dir / "venv" / "mcc-source").read_text()
    assert main(argv[:-1]) == 0
    out = capsys.readouterr().out
    assert "OK: the device computes the host's bits" in out and "LiteRT ref kernels, device vs host: 0 of" in out
    assert (board_dir / "venv" / "mcc-source").read_text() == stamp


@pytest.mark.slow
def test_bench_over_ssh(sshd, capsys):
    cfg, tmp = sshd
    assert main(["bench", str(ZOO_INT8), "--device", "rpi4", "--host", "mcc-loopback", "--ssh-config", str(cfg),
                 "--python", sys.executable, "--remote-dir", str(tmp / "board"), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "on ssh mcc-loopback" in out and "estimate for rpi4 at 1 thread(s)" in out
    assert out.count("\n  litert  ") == 1 and out.count("\n  mcc  ") == 1


def test_ssh_errors_name_the_cause(sshd, tmp_path, capsys):
    cfg, tmp = sshd
    base = ["validate", str(ZOO_INT8), "--input", str(ZOO_SAMPLES), "--device", "rpi4", "--host", "mcc-loopback",
            "--remote-dir", str(tmp_path / "board")]
    _keygen(tmp_path / "stranger")  # a key the server does not know
    assert main([*base, "--ssh-config", str(_client_config(tmp_path, int(cfg.read_text().split("Port ")[1].split()[0]),
                                                           tmp_path / "stranger"))]) == 2
    err = capsys.readouterr().err
    assert "ssh could not log in to mcc-loopback: authentication failed" in err and "ssh-copy-id" in err
    assert main([*base, "--ssh-config", str(_client_config(tmp_path, _free_port(), tmp / "id"))]) == 2
    assert "cannot reach mcc-loopback over ssh: " in capsys.readouterr().err
    assert main([*base, "--ssh-config", str(cfg), "--python", "/nonexistent/python3"]) == 2
    err = capsys.readouterr().err
    assert "no /nonexistent/python3 on mcc-loopback: install it there" in err and "--python" in err


@pytest.mark.slow
def test_ssh_reports_exactly_what_to_install_when_the_board_cannot_fetch_it(sshd, tmp_path, capsys):
    """A board without the base install's dependencies and without an index to fetch them from (a venv that does not
    see the system's packages, whose pip.conf says no-index): mcc names the missing modules and the pip line."""
    cfg, _ = sshd
    board = tmp_path / "offline"
    subprocess.run([sys.executable, "-m", "venv", str(board / "venv")], check=True)
    (board / "venv" / "pip.conf").write_text("[global]\nno-index = true\n")
    assert main(["bench", str(ZOO_INT8), "--host", "mcc-loopback", "--ssh-config", str(cfg), "--python",
                 sys.executable, "--remote-dir", str(board)]) == 2
    err = capsys.readouterr().err
    assert "mcc's base install is incomplete on mcc-loopback: ai_edge_litert, flatbuffers, numba, numpy" in err
    assert f"run: {board}/venv/bin/python -m pip install ai-edge-litert==2.3.0 flatbuffers==25.12.19" in err
