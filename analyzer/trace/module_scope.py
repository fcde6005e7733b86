"""The names under which capture scopes each nn.Module call in a trace, and how the parser reads them back.

A scope is a ``record_function`` annotation named ``module::<ClassName>::<qualified.name>``; the class is an
identifier, so the qualified name is everything after the second ``::`` (module names may hold any text).
Traces captured elsewhere with ``with_stack=True`` (and ``with_modules``, on by default then) carry PyTorch's own
module events instead, ``python_function`` events named ``nn.Module: Conv2d_3``: the class and an index that
tells its instances apart, which then names the layer (PyTorch records no attribute names).
Kineto writes annotation names into the trace JSON without escaping them, and drops some non-ASCII ones, so
``"``, ``\\``, ``%`` and every character outside printable ASCII are percent-encoded (UTF-8) here and decoded
by the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

PREFIX = "module::"
PYTORCH_PREFIX = "nn.Module: "  # PyTorch's own module events, e.g. "nn.Module: Conv2d_3"
ROOT_NAME = "<model>"


@dataclass(frozen=True)
class ModuleScope:
    """One module call as the trace names it."""

    qualified_name: str  # e.g. "layer1.0.conv2"; ROOT_NAME for the model itself
    class_name: str  # e.g. "Conv2d"


def scope_name(qualified_name: str, class_name: str) -> str:
    """The annotation name for a call of the module ``qualified_name`` of class ``class_name``."""
    return f"{PREFIX}{_encode(class_name)}::{_encode(qualified_name or ROOT_NAME)}"


def parse_scope_name(name: str) -> ModuleScope | None:
    """The module scope an annotation or a PyTorch module event names, or None when it is not a module scope."""
    if name.startswith(PYTORCH_PREFIX):
        instance = name[len(PYTORCH_PREFIX):]
        return ModuleScope(qualified_name=instance, class_name=instance.rpartition("_")[0] or instance)
    if not name.startswith(PREFIX):
        return None
    class_name, sep, qualified = name[len(PREFIX):].partition("::")
    if not sep or not class_name:
        return None
    return ModuleScope(qualified_name=unquote(qualified), class_name=unquote(class_name))


_UNSAFE = frozenset('%"\\')


def _encode(text: str) -> str:
    return "".join(quote(c, safe="") if c in _UNSAFE or not " " <= c <= "~" else c for c in text)
