"""What capture records of a torch.compile'd model in its trace's convdoctor metadata (``INDUCTOR_KEY``): each
compiled graph's kernel calls in the order its generated code makes them, with the nn.Module paths each call's
work came from (``capture.inductor_capture`` writes it; reading it back needs no torch).

A kernel is named as Inductor's provenance names it (``cpp_fused_relu_0``, ``extern_kernels.convolution``,
``torch.ops.mkldnn._convolution_pointwise.default``); ``trace_name`` gives the name its event has in the trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from convdoctor.analyzer.trace.profile import Profile
from convdoctor.analyzer.trace.recorded import positive

INDUCTOR_KEY = "inductor"
# In it: {"compiled_by": COMPILED_BY_*, "freezing": bool, "compile_s": float, "unprofiled_step_us": float,
#         "eager_unprofiled_step_us": float or null, "timed_under_load_cores": float or null,
#         "modules": {qualified name: class name},
#         "eager_order": [leaf module names, in the order one eager step calls them],
#         "eager_convs": [[conv module name, input shape, weight shape], ...] (one eager step's conv calls, in order),
#         "graphs": [[[kernel, [module names]], ...], ...]}
COMPILED_BY_MODEL_FILE = "model file"  # the model file returned torch.compile(model)
COMPILED_BY_CONVDOCTOR = "convdoctor"  # `profile --compiled`: torch.compile of a copy, as CD116's candidate
GENERATED_CALL = re.compile(r"^graph_\d+_")  # cpp kernels' profiler events: graph_0_cpp_fused_relu_0


Shapes = tuple[tuple[int, ...], tuple[int, ...]]  # a conv call's input and weight shapes


@dataclass(frozen=True)
class CallSite:
    """One kernel call in a compiled graph's generated code."""

    kernel: str  # as Inductor's provenance names it
    modules: tuple[str, ...]  # the modules of the FX nodes provenance names for it, in graph order; may be empty

    @property
    def trace_name(self) -> str:
        """The name of this call's event in a trace."""
        return trace_name(self.kernel)


@dataclass(frozen=True)
class InductorRecord:
    """The compile of a traced model as capture recorded it."""

    compiled_by: str
    freezing: bool
    compile_s: float | None
    unprofiled_step_us: float | None
    eager_unprofiled_step_us: float | None
    timed_under_load_cores: float | None  # other processes' load while the compiled step was timed, when too high
    module_classes: dict[str, str]  # qualified name -> class name, every module of the model
    eager_order: tuple[str, ...]  # the leaf modules one eager step calls, in call order (repeated calls repeated)
    eager_convs: tuple[tuple[str, Shapes], ...]  # one eager step's conv calls in order: module, (input, weight)
    graphs: tuple[tuple[CallSite, ...], ...]  # one per compiled graph, in compile order


def trace_name(kernel: str) -> str:
    """The event name a kernel call has in a trace: ``extern_kernels.convolution`` -> ``aten::convolution``,
    ``torch.ops.mkldnn._convolution_pointwise.default`` -> ``mkldnn::_convolution_pointwise``; Inductor's generated
    kernels keep their names (on a CPU the event adds a ``graph_<n>_`` prefix: ``matches`` allows it)."""
    if kernel.startswith("extern_kernels."):
        return "aten::" + kernel.split(".")[1]
    parts = kernel.split(".")
    if kernel.startswith("torch.ops.") and len(parts) >= 4:
        return f"{parts[2]}::{parts[3]}"
    if parts[0] in ("aten", "mkldnn", "mkl", "quantized", "onednn") and len(parts) >= 2:
        return f"{parts[0]}::{parts[1]}"
    return kernel


def matches(event_name: str, site: CallSite) -> bool:
    """Whether a trace event is a call of ``site``'s kernel."""
    expected = site.trace_name
    return event_name == expected or (GENERATED_CALL.match(event_name) is not None
                                      and GENERATED_CALL.sub("", event_name, count=1) == expected)


def recorded_inductor(profile: Profile) -> InductorRecord | None:
    """The compile a trace's convdoctor metadata records, or None (an eager trace, or one captured elsewhere).
    Entries of another form are left out."""
    entry = profile.recorded.get(INDUCTOR_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("graphs"), list):
        return None
    modules, order, convs = entry.get("modules"), entry.get("eager_order"), entry.get("eager_convs")
    classes = {k: v for k, v in modules.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(modules, dict) else {}
    return InductorRecord(
        compiled_by=str(entry.get("compiled_by", COMPILED_BY_CONVDOCTOR)),
        freezing=entry.get("freezing") is True,
        compile_s=positive(entry.get("compile_s")),
        unprofiled_step_us=positive(entry.get("unprofiled_step_us")),
        eager_unprofiled_step_us=positive(entry.get("eager_unprofiled_step_us")),
        timed_under_load_cores=positive(entry.get("timed_under_load_cores")),
        module_classes=classes,
        eager_order=tuple(m for m in order if isinstance(m, str)) if isinstance(order, list) else (),
        eager_convs=tuple(_conv_call(c) for c in convs if _conv_call(c) is not None) if isinstance(convs, list) else (),
        graphs=tuple(tuple(_sites(graph)) for graph in entry["graphs"] if isinstance(graph, list)),
    )


def _sites(graph: list[Any]) -> list[CallSite]:
    return [CallSite(value[0], tuple(m for m in value[1] if isinstance(m, str))) for value in graph
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], list)]


def _conv_call(value: Any) -> tuple[str, Shapes] | None:
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)):
        return None
    shapes = [dims(v) for v in value[1:]]
    return None if None in shapes else (value[0], (shapes[0], shapes[1]))


def dims(value: Any) -> tuple[int, ...] | None:
    """A tensor shape as a trace or the metadata writes it (a list of ints), else None."""
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return tuple(value) if ok else None
