"""convdoctor: why is my convolution model slow, and how much faster will each fix make it?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convdoctor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from convdoctor.api import ProfileOptions, profile, profile_file  # noqa: E402

__all__ = ["ProfileOptions", "profile", "profile_file", "__version__"]
