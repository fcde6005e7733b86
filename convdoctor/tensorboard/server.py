"""`convdoctor tensorboard`: TensorBoard on an out dir, listening on 127.0.0.1 only."""

from __future__ import annotations

import socket
from pathlib import Path

from convdoctor.errors import TensorBoardError
from convdoctor.tensorboard.plugin import find_runs

HOST = "127.0.0.1"


def start_tensorboard(out: Path, port: int) -> str:
    """Serve OUT (an out dir, or any log dir: its runs are found below it) in a background thread; its URL.

    Port 0 picks a free port. Raises TensorBoardError when OUT holds no traces or the port is taken.
    """
    from tensorboard import program

    if not out.is_dir():
        raise TensorBoardError(f"{out}: no such directory; run `convdoctor profile model.py` first, or pass the "
                               "out dir (or log dir) that holds its traces")
    if not find_runs(out):
        raise TensorBoardError(f"{out}: holds no *.pt.trace.json[.gz] traces; run `convdoctor profile model.py` "
                               "first, or pass the out dir (or log dir) that holds them")
    if port and not _port_free(port):  # before TensorBoard starts its plugins' loader processes
        raise TensorBoardError(f"TensorBoard cannot listen on {HOST}:{port}: the port is in use; pass another "
                               "--port (0 picks a free one)")
    board = program.TensorBoard()
    board.configure(argv=["tensorboard", "--logdir", str(out), "--host", HOST, "--port", str(port),
                          "--load_fast=false"])  # the Python reader: no data-server child process
    try:
        return board.launch()
    except program.TensorBoardServerException as exc:
        raise TensorBoardError(f"TensorBoard cannot listen on {HOST}:{port}: {exc.msg}; pass another --port "
                               "(0 picks a free one)") from exc


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TensorBoard's server binds
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True
