"""Where the pipeline says what it is doing: the terminal's progress line, or nothing (the Python API)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Where the pipeline says what it is doing."""

    def stage(self, text: str) -> None: ...

    def rounds(self, done: int, total: int) -> None: ...


class SilentProgress:
    """Progress that says nothing (the Python API's default)."""

    def stage(self, text: str) -> None:
        pass

    def rounds(self, done: int, total: int) -> None:
        pass
