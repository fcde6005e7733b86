"""convdoctor: why is my convolution model slow, and how much faster will each fix make it?"""

from __future__ import annotations

from typing import Any

from convdoctor.version import __version__

__all__ = ["ProfileOptions", "profile", "profile_file", "__version__"]


def __getattr__(name: str) -> Any:
    """The profiling API, imported on first use: it imports torch, which `convdoctor analyze` never needs."""
    if name in ("ProfileOptions", "profile", "profile_file"):
        from convdoctor import api

        return getattr(api, name)
    raise AttributeError(f"module 'convdoctor' has no attribute {name!r}")
