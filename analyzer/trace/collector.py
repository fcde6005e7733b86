"""Pausing Python's cyclic garbage collector while a trace is decoded, typed and analyzed."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off, then restore its previous state.

    A large trace becomes millions of container objects that all stay alive until its report is written. While
    they are being created the collector keeps traversing them and frees nothing: that took most of the time of
    a large parse. Reference counting still frees everything that is not in a cycle; cycles made inside the block
    (a Profile's parent/child links) are collected as usual once the collector is back on.

    On the way out the objects made in the block join the oldest generation (``freeze`` then ``unfreeze``), as
    long-lived objects do: otherwise they would all still be in the youngest one, and the first young
    collections after the block would traverse every one of them again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()
