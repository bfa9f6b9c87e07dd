"""`mcc build` and `mcc init` (issue 20): the project file's validation, the incremental cache, reproducible
outputs, the metadata JSON and C array checked against LiteRT's reading of the same file, the memory check."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from build_projects import PROJECT, conv_model, samples, tiny_project

from mcc.cli import main
from mcc.formats.tflite.metadata import read_metadata
from mcc.project import load_project


def build(capsys, project, *extra) -> dict:
    code = main(["build", "--project", str(project), "--json", *extra])
    summary = json.loads(capsys.readouterr().out)
    assert summary["exit_code"] == code
    return summary


def compiled(summary) -> list[tuple[str, str]]:
    return [(e["name"], e["target"]) for e in summary["entries"] if e["status"] == "compiled"]


def test_second_build_compiles_nothing_and_a_changed_option_recompiles_exactly_its_entry(tmp_path, capsys):
    project = tiny_project(tmp_path)
    everything = [("a", "arm-int8"), ("b", "arm-fp32"), ("b", "x86-fp32")]
    first = build(capsys, project)
    assert first["exit_code"] == 0 and compiled(first) == everything
    assert set(first["entries"][0]["sqnr_db"]) == {"y"} and "sqnr_db" not in first["entries"][1]  # int8 only
    outputs = {o["path"]: o["sha256"] for e in first["entries"] for o in e["outputs"]}
    assert set(outputs) == {"build/a.tflite", "build/a.json", "build/a.c", "build/a.h", "out_b/b_arm_fp32.tflite",
                            "out_b/b_arm_fp32.json", "out_b/b_x86_fp32.onnx", "out_b/b_x86_fp32.json"}
    stamps = {p: os.stat(tmp_path / p).st_mtime_ns for p in outputs}
    for e in first["entries"]:  # the HTML report beside the JSON one, rendered from it
        page = (tmp_path / e["html"]).read_text()
        assert e["html"] == e["report"].replace(".report.json", ".html") and "<svg" in page
        assert f"<td>{e['target']}</td>" in page or e["target"] in page, page[:2000]
        assert ("No device memory check" in page) == (e["memory_check"] is None)

    second = build(capsys, project)
    assert compiled(second) == [] and second["skipped"] == 3
    assert [e["status"] for e in second["entries"]] == ["up to date"] * 3
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in outputs} == stamps  # not rewritten

    os.utime(tmp_path / "tiny_samples.npz")  # a newer time, the same content: still up to date
    assert compiled(build(capsys, project)) == []

    project.write_text(PROJECT.replace('observer = "mse"', 'observer = "minmax"'))
    assert compiled(build(capsys, project)) == [("a", "arm-int8")]

    (tmp_path / "out_b/b_x86_fp32.onnx").unlink()  # a missing output is rebuilt
    assert compiled(build(capsys, project)) == [("b", "x86-fp32")]

    samples(tmp_path / "tiny_samples.npz", seed=7)  # new calibration data: only the int8 entry uses it
    assert compiled(build(capsys, project)) == [("a", "arm-int8")]

    assert compiled(build(capsys, project, "--force")) == everything


def test_outputs_are_byte_identical_across_folders(tmp_path, capsys):
    runs = []
    for folder in ("one", "elsewhere/two"):
        project = tiny_project(tmp_path / folder)
        summary = build(capsys, project)
        assert summary["compiled"] == 3
        runs.append({o["path"]: (tmp_path / folder / o["path"]).read_bytes()
                     for e in summary["entries"] for o in e["outputs"]})
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == 8
    differing = [p for p in runs[0] if runs[0][p] != runs[1][p]]
    assert differing == []


def _litert_peak(interpreter) -> int:
    """Peak bytes of activations alive at once over LiteRT's op order, from LiteRT's own reading of the file."""
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    constant = {i for op in ops for i in op["inputs"] if i >= 0} - {i for op in ops for i in op["outputs"]}
    constant -= {d["index"] for d in interpreter.get_input_details()}
    last = {}
    for step, op in enumerate(ops):
        for i in op["inputs"]:
            last[i] = step
    for d in interpreter.get_output_details():
        last[d["index"]] = len(ops)

    def size(i):
        return int(np.prod(details[i]["shape"])) * np.dtype(details[i]["dtype"]).itemsize

    live = {d["index"]: size(d["index"]) for d in interpreter.get_input_details()}
    peak = sum(live.values())
    for step, op in enumerate(ops):
        live.update({i: size(i) for i in op["outputs"]})
        peak = max(peak, sum(live.values()))
        live = {i: s for i, s in live.items() if last.get(i, step) > step and i not in constant}
    return peak


def test_metadata_and_c_array_describe_the_file_as_litert_reads_it(tmp_path, capsys):
    project = tiny_project(tmp_path)
    assert build(capsys, project)["exit_code"] == 0
    data = (tmp_path / "build/a.tflite").read_bytes()
    meta = json.loads((tmp_path / "build/a.json").read_text())
    interpreter = Interpreter(model_content=data)
    for kind, details in (("inputs", interpreter.get_input_details()), ("outputs", interpreter.get_output_details())):
        assert [(t["name"], t["shape"], t["dtype"]) for t in meta[kind]] == \
               [(d["name"], d["shape"].tolist(), np.dtype(d["dtype"]).name) for d in details]
        assert [(t["quantization"]["scale"], t["quantization"]["zero_point"]) for t in meta[kind]] == \
               [(d["quantization_parameters"]["scales"].tolist(), d["quantization_parameters"]["zero_points"].tolist())
                for d in details]  # io = "int8": the app needs these
    assert meta["inputs"][0]["layout"] == "NHWC"
    assert meta["preprocessing"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))  # ... and in the file, as TFLite Metadata
    embedded = read_metadata(bytes(model.buffers[model.metadata[0].buffer].data))
    assert embedded["subgraphs"][0]["inputs"][0]["normalization"] == meta["preprocessing"]
    assert meta["model"] == {"file": "a.tflite", "bytes": len(data), "sha256": meta["model"]["sha256"]}
    assert meta["arena_bytes_estimate"] == _litert_peak(interpreter)
    assert meta["memory_check"]["fits"] and meta["memory_check"]["model_bytes"] == len(data)

    source = (tmp_path / "build/a.c").read_text()
    header = (tmp_path / "build/a.h").read_text()
    assert re.search(r"alignas\(16\) const unsigned char a\[(\d+)\]", source).group(1) == str(len(data))
    array = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", source.split("= {", 1)[1]))
    assert array == data
    assert f"#define A_MODEL_BYTES {len(data)}\n" in header
    assert f"#define A_ARENA_BYTES {meta['arena_bytes_estimate']}\n" in header


def test_memory_check_refuses_a_model_that_does_not_fit_and_builds_the_others(tmp_path, capsys):
    conv_model(tmp_path / "big.onnx", size=128)
    conv_model(tmp_path / "tiny.onnx")
    (tmp_path / "mcc.toml").write_text('[[model]]\nname = "big"\nsource = "big.onnx"\ntarget = "arm-fp32"\n'
                                       'device = "cortex-m7"\n\n[[model]]\nname = "small"\nsource = "tiny.onnx"\n'
                                       'target = "arm-fp32"\ndevice = "cortex-m7"\n')
    summary = build(capsys, tmp_path / "mcc.toml")
    assert summary["exit_code"] == 1 and compiled(summary) == [("small", "arm-fp32")]
    big = summary["entries"][0]
    assert big["status"] == "failed" and big["exit_code"] == 1
    # the peak: the flatten (a RESHAPE, which TFLite Micro copies) with its input and output alive together, 4 + 4
    # float32 channels of 128 x 128, more than the conv's 3 + 4; and the 5 x 65,536 float weights exceed the flash
    assert f"arena needs {(4 + 4) * 128 * 128 * 4:,} bytes of RAM and the device has 327,680" in big["error"]
    assert "bytes of flash and the device has 1,048,576" in big["error"]
    assert not (tmp_path / "build/big.tflite").exists() and (tmp_path / "build/small.tflite").exists()


def _line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


BAD = [  # (replace this, with this, the error names, the line holding)
    ('io = "int8"', 'io = "int8"\ncolour = "blue"', "option 'colour' is neither", "colour ="),
    ('io = "int8"', "io = 8", "option 'io' must be one of 'float', 'int8', got 8", "io = 8"),
    ('observer = "mse"', 'min_sqnr = "high"', "option 'min_sqnr' must be float | None", "min_sqnr"),
    ('output_dir = "out_b"', 'output_dir = "out_b"\nouput = "x"', "unknown key 'ouput'", "ouput"),
    ('targets = ["arm-fp32", "x86-fp32"]', 'targets = ["arm-fp32", "risc-v"]', "unknown target 'risc-v'", "risc-v"),
    ('device = "cortex-m7"', 'device = "toaster"', "unknown device 'toaster'", "toaster"),
    ('calib = "tiny_samples.npz"', 'calib = "missing.npz"', "calib file 'missing.npz' does not exist", "missing"),
    ('name = "b"', 'name = "b-2"', "name must be a C identifier", "b-2"),
    ('name = "b"', 'name = "b"\noptions = {io = "int8"}', "option 'io' is neither", "options = {io"),
    ('std = [0.25, 0.25, 0.25]', 'std = "0.25"', "preprocess 'std' must be an array of numbers", 'std = "0.25"'),
    ('emit = ["c-array"]', 'emit = ["rust"]', "unknown emit 'rust'", "rust"),
]


@pytest.mark.parametrize("old,new,message,marker", BAD, ids=[b[3] for b in BAD])
def test_project_errors_name_the_key_and_its_line(tmp_path, capsys, old, new, message, marker):
    text = PROJECT.replace(old, new)
    assert text != PROJECT
    project = tiny_project(tmp_path, text)
    assert main(["build", "--project", str(project)]) == 2
    err = capsys.readouterr().err
    assert f"mcc.toml: line {_line_of(text, marker)}: " in err and message in err
    assert not (tmp_path / "build").exists()  # nothing compiled before the whole file is valid


def test_duplicate_outputs_and_broken_toml_are_refused(tmp_path, capsys):
    text = PROJECT + '\n[[model]]\nname = "a"\nsource = "tiny.onnx"\ntarget = "arm-fp32"\n'
    tiny_project(tmp_path, text)
    assert main(["build", "--project", str(tmp_path / "mcc.toml")]) == 2
    err = capsys.readouterr().err
    assert f"line {len(text.splitlines()) - 3}: model 'a' (arm-fp32) writes a.* into the same folder as the model " \
           f"on line 1" in err
    (tmp_path / "mcc.toml").write_text("[[model]\nname = 1\n")
    assert main(["build", "--project", str(tmp_path / "mcc.toml")]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_init_writes_a_commented_project_that_builds_and_whose_options_are_real(tmp_path, capsys, monkeypatch):
    conv_model(tmp_path / "net.onnx")
    samples(tmp_path / "net_samples.npz")
    assert main(["init", str(tmp_path / "net.onnx")]) == 0
    text = (tmp_path / "mcc.toml").read_text()
    assert 'source = "net.onnx"' in text and 'calib = "net_samples.npz"' in text and 'target = "arm-int8"' in text
    assert main(["init", str(tmp_path / "net.onnx")]) == 2  # never overwrites
    assert "does not overwrite" in capsys.readouterr().err
    # every option the file offers, uncommented, is an option the target takes
    options = text.split("[model.options]")[1].split("\n\n")[0]
    uncommented = re.sub(r"(?m)^# ", "", options)
    (tmp_path / "all.toml").write_text(text.replace(options, uncommented).replace('# device = ', 'device = '))
    job, = load_project(tmp_path / "all.toml")
    assert set(job.pass_options) | set(job.compile_kwargs) == set(re.findall(r"(?m)^(\w+) =", uncommented))
    assert job.device == "cortex-m7"
    summary = build(capsys, tmp_path / "mcc.toml")
    assert compiled(summary) == [("net", "arm-int8")]
    # without a model argument, the only model file in the current folder
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tmp_path / "net.onnx", other / "solo.onnx")
    monkeypatch.chdir(other)
    assert main(["init"]) == 0
    assert 'source = "solo.onnx"' in (other / "mcc.toml").read_text()
    assert load_project(other / "mcc.toml")[0].target == "arm-fp32"  # no samples beside it


def test_cmake_dir_holds_the_package_config(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--cmake-dir"])
    assert e.value.code == 0
    folder = capsys.readouterr().out.strip()
    assert os.path.isfile(os.path.join(folder, "mccConfig.cmake")) and os.path.isfile(os.path.join(folder, "mcc.cmake"))


def test_a_data_file_option_is_resolved_in_the_project_folder_and_its_content_rebuilds(tmp_path, capsys,
                                                                                       monkeypatch):
    """--finetune's and --eval-data's data as project options: the paths are relative to mcc.toml, and new
    training or evaluation data (same name) recompiles the entry that uses it, and only that one."""
    text = PROJECT.replace('observer = "mse"',
                           'observer = "mse"\nfinetune = "train.npz"\nepochs = 1\neval_data = "val.npz"')
    project = tiny_project(tmp_path / "p", text)
    samples(tmp_path / "p/train.npz", n=8, seed=3)
    samples(tmp_path / "p/val.npz", n=5, seed=5)
    elsewhere = tmp_path / "cwd"  # the build runs from another folder: the path must not depend on it
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = build(capsys, project)
    assert first["exit_code"] == 0 and len(compiled(first)) == 3
    report = json.loads((tmp_path / "p" / first["entries"][0]["report"]).read_text())
    assert report["finetune"]["samples"] == 8 and report["finetune"]["epochs"] == 1
    assert report["compression"]["data"] == "5 held-out samples of val.npz"
    assert compiled(build(capsys, project)) == []
    samples(tmp_path / "p/train.npz", n=8, seed=4)
    assert compiled(build(capsys, project)) == [("a", "arm-int8")]
    samples(tmp_path / "p/val.npz", n=5, seed=6)
    assert compiled(build(capsys, project)) == [("a", "arm-int8")]
    (tmp_path / "p/train.npz").unlink()
    assert main(["build", "--project", str(project)]) == 2
    assert "option 'finetune' names a data file; 'train.npz' does not exist" in capsys.readouterr().err
