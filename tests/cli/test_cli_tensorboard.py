"""`convdoctor tensorboard [OUT]`: TensorBoard on an out dir, on 127.0.0.1, its URL printed; one line when it cannot."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import sys
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SHARED_TRACES
from tensorboard_server import serve

from convdoctor.cli import main

PRINTED_URL = re.compile(r"^convdoctor: TensorBoard at (http://127\.0\.0\.1:\d+)/#convdoctor \(Ctrl-C stops it\)$",
                         re.MULTILINE)


def test_serves_the_out_dir_and_stops_on_ctrl_c(small_cnn_run, tmp_path: Path):
    out, report, _ = small_cnn_run
    command = [sys.executable, "-m", "convdoctor", "tensorboard", str(out), "--port", "0"]
    with serve(command, tmp_path, PRINTED_URL) as server:
        assert urllib.parse.urlsplit(server.base_url).hostname == "127.0.0.1"
        status, page, _ = server.get("/")
        assert status == 200 and b"<title>TensorBoard</title>" in page
        worker = Path(report["trace_files"][0]).name.split(".pt.trace")[0]
        assert server.json("/data/plugin/convdoctor/runs") == [{"run": "tb/small_cnn-eval-cpu", "workers": [worker]}]
        assert server.json("/data/plugins_listing")["convdoctor"]["enabled"]
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=30) == 0
    assert "KeyboardInterrupt" not in server.log_text()


def one_error_line(*args: str) -> str:
    result = CliRunner().invoke(main, ["tensorboard", *args])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("convdoctor: error: ")
    return line


def test_missing_out_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    line = one_error_line(str(tmp_path / "nowhere"))
    assert "nowhere: no such directory" in line and "convdoctor profile" in line
    monkeypatch.chdir(tmp_path)
    line = one_error_line()  # the default: ./convdoctor-out
    assert line.startswith("convdoctor: error: convdoctor-out: no such directory")


def test_out_dir_without_traces_is_one_line(tmp_path: Path):
    (tmp_path / "model" / "tb").mkdir(parents=True)
    assert "holds no *.pt.trace.json[.gz] traces" in one_error_line(str(tmp_path))


def test_port_in_use_is_one_line(tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(SHARED_TRACES["cpu_only"], out / "rank0.1.pt.trace.json.gz")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(str(out), "--port", str(port))
    assert f"127.0.0.1:{port}: the port is in use" in line and "--port" in line
