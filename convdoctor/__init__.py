"""convdoctor: why is my convolution model slow, and how much faster will each fix make it?"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("convdoctor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ProfileOptions", "profile", "profile_file", "__version__"]


def __getattr__(name: str) -> Any:
    """The profiling API, imported on first use: it imports torch, which `convdoctor analyze` never needs."""
    if name in ("ProfileOptions", "profile", "profile_file"):
        from convdoctor import api

        return getattr(api, name)
    raise AttributeError(f"module 'convdoctor' has no attribute {name!r}")
