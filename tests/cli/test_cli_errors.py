"""Every bad input a user can give `convdoctor profile` gets one clear line, exit code 2, and no report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, MODELS, run_cli

from convdoctor.cli import main

pytestmark = pytest.mark.analysis  # bad input fails before anything is timed: the parallel phase (conftest.py)

CASES = [
    # (model file, extra args, words the error line must hold)
    ("does_not_exist.py", [], ["does_not_exist.py", "no such file"]),
    (".", [], ["is a directory"]),
    ("syntax_error.py", [], ["syntax_error.py:3", "syntax error"]),
    ("missing_dependency.py", [], ["convdoctor_no_such_package", "install"]),
    ("no_entry.py", [], ["get_model()", "model"]),
    ("raises.py", [], ["get_model() raised ValueError", "weights file not found"]),
    ("not_a_module.py", [], ["not a torch.nn.Module"]),
    ("bad_inputs_type.py", [], ["inputs are a list", "tuple/list of tensors"]),
    ("wrong_shapes.py", [], ["features.0", "[16, 3, 3, 3]", "[1, 4, 16, 16]", "fix get_inputs()"]),
    ("module_level.py", ["--batch-size", "4"], ["--batch-size needs get_inputs(batch_size)"]),
    ("exits.py", [], ["get_model() raised SystemExit", "no GPU found"]),
    ("forward_key_error.py", [], ["forward raised KeyError", "'auxiliary'", "forward_key_error.py:"]),
    ("os_exit_in_forward.py", [], ["os._exit(3)", "remove that call"]),
    ("hangs_in_forward.py", ["--timeout", "1.5"], ["first step did not finish within 1.5 s", "--timeout"]),
    ("hangs_on_import.py", ["--timeout", "1.5"], ["hangs_on_import.py", "within 1.5 s", "--timeout"]),
]


@pytest.mark.parametrize("model_file, extra, words", CASES, ids=[c[0] for c in CASES])
def test_bad_model_file_is_one_line_and_exit_2(tmp_path: Path, model_file: str, extra: list[str], words: list[str]):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["profile", str(MODELS / model_file), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("convdoctor: error:")]
    assert len(errors) == 1, result.stderr
    assert "\n" not in errors[0]
    for word in words:
        assert word in errors[0]
    assert "Traceback" not in result.output
    assert not (out / "report.json").exists() and not (out / "report.html").exists()


def test_error_in_a_fresh_process_has_no_traceback(tmp_path: Path):
    result = run_cli("profile", str(MODELS / "raises.py"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("convdoctor: error:")


def test_unwritable_out_dir_is_caught_before_any_work(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["profile", str(EXAMPLES / "seed_conv.py"), "--out", str(blocker / "out")])
    assert result.exit_code == 2
    assert "cannot write reports there" in result.stderr
    assert "loading" not in result.stderr  # nothing was loaded or run


def test_cuda_asked_for_without_cuda_is_a_user_error(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["profile", str(EXAMPLES / "seed_conv.py"), "--device", "cuda",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--device cpu" in result.stderr


def test_what_the_model_prints_stays_out_of_the_json_on_stdout(tmp_path: Path):
    # --wait-quiet 0: in the parallel phase the capture would wait for the other test process to leave the cores
    result = run_cli("profile", str(MODELS / "chatty.py"), "--out", str(tmp_path), "--no-measure", "--format", "json",
                     "--wait-quiet", "0")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # 600 kB of prints from the model did not corrupt it
    assert [layer["name"] for layer in report["layers"]] == ["conv"]
    notes = [line for line in result.stderr.splitlines() if line.startswith("convdoctor: note: the model printed")]
    assert len(notes) == 1 and "'building the model'" in notes[0]
    assert len(result.stderr) < 5000  # and none of it floods the terminal


def test_time_limit_interrupts_user_code():
    import time

    from convdoctor.analyzer.capture.workload import time_limit
    from convdoctor.errors import ModelTimeoutError

    started = time.perf_counter()
    with pytest.raises(ModelTimeoutError, match="did not finish within 0.2 s"):
        with time_limit(0.2, "the model's forward"):
            while True:
                pass
    assert time.perf_counter() - started < 2
    with time_limit(1.0, "nothing"):
        pass  # a block that ends in time is left alone, and the alarm is cleared
    time.sleep(1.2)


def test_os_exit_in_the_model_does_not_end_a_real_process_silently(tmp_path: Path):
    result = run_cli("profile", str(MODELS / "os_exit_in_forward.py"), "--out", str(tmp_path))
    assert result.returncode == 2  # not the model's 3, and not a silent end
    assert result.stderr.strip().splitlines()[-1].startswith("convdoctor: error:")
    assert "os._exit(3)" in result.stderr
