"""Keep what the user's model prints out of convdoctor's own output (a JSON report on stdout stays valid JSON)."""

from __future__ import annotations

import contextlib
import io
from typing import Iterator

KEPT_CHARS = 2000


class PrintedOutput(io.TextIOBase):
    """A text sink that counts what is written and keeps only its beginning."""

    def __init__(self) -> None:
        self.chars = 0
        self.head = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.chars += len(text)
        if len(self.head) < KEPT_CHARS:
            self.head += text[: KEPT_CHARS - len(self.head)]
        return len(text)

    def summary(self) -> str | None:
        """One line saying how much the model printed, or None when it printed nothing."""
        if not self.chars:
            return None
        first = next((line for line in self.head.splitlines() if line.strip()), "")
        return (f"the model printed {self.chars:,} characters to stdout (kept out of this output); "
                f"first line: {first[:120]!r}")


@contextlib.contextmanager
def captured_prints() -> Iterator[PrintedOutput]:
    """Send Python-level prints of the code inside (the user's model) to a PrintedOutput."""
    sink = PrintedOutput()
    with contextlib.redirect_stdout(sink):
        yield sink
