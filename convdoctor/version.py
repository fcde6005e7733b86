"""The installed version of convdoctor, as reports record it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convdoctor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
