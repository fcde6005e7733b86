"""A real TensorBoard server for tests: started as a subprocess on 127.0.0.1 and a free port, always stopped.

``tensorboard(logdir, workdir)`` runs TensorBoard itself (``without``: plugins left out, by name);
``serve(command, workdir, listening)`` runs any command that starts one (`convdoctor tensorboard`) and waits for the
line that names its URL. Servers run in their own process group, so the PyTorch Profiler plugin's loader processes
stop with them.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

LISTENING = re.compile(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/")
START_TIMEOUT = 40  # seconds for TensorBoard to listen and the plugin to load its runs


class TensorBoard:
    """A running TensorBoard server and its log."""

    def __init__(self, process: subprocess.Popen, base_url: str, log: Path) -> None:
        self.process, self.base_url, self.log = process, base_url, log

    def get(self, path: str, **params: str) -> tuple[int, bytes, dict[str, str]]:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def json(self, path: str, **params: str) -> Any:
        status, body, headers = self.get(path, **params)
        assert status == 200, f"{path} {params}: HTTP {status}: {body[:500]!r}\nserver log:\n{self.log_text()[-3000:]}"
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve(command: list[str], workdir: Path, listening: re.Pattern[str] = LISTENING) -> Iterator[TensorBoard]:
    """Run COMMAND until its output matches LISTENING (group 1: the base URL); stopped (with its children) on exit."""
    log = workdir / "tensorboard.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                   cwd=workdir, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (found := listening.search(log.read_text(errors="replace"))):
            assert process.poll() is None, f"TensorBoard exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"TensorBoard did not start in {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.2)
        yield TensorBoard(process, found.group(1), log)
    finally:
        stop(process)


# tensorboard.main's run_main with some plugins left out: its first argument names them, comma-separated.
WITHOUT_PLUGINS = """import sys
from absl import app
from tensorboard import default, main_lib, program
left_out = set(sys.argv.pop(1).split(","))
main_lib.global_init()
board = program.TensorBoard(plugins=[p for p in default.get_plugins()
                                     if getattr(p, "plugin_name", None) not in left_out])
app.run(board.main, flags_parser=board.configure)
"""


def tensorboard(logdir: Path, workdir: Path, without: tuple[str, ...] = ()):
    """TensorBoard on LOGDIR, listening on a free port of 127.0.0.1 (port 0: TensorBoard prints the one it got),
    without the plugins named in WITHOUT (e.g. "pytorch_profiler", which loads every trace of the log dir)."""
    launch = ["-c", WITHOUT_PLUGINS, ",".join(without)] if without else ["-m", "tensorboard.main"]
    return serve([sys.executable, *launch, "--logdir", str(logdir), "--host", "127.0.0.1",
                  "--port", "0", "--load_fast=false"],  # the Python reader: no data-server child process
                 workdir)


def stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own process group, and whatever it left in the group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
    try:  # loader processes left in the group after the server itself exited
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
