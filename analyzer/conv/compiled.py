"""What torch.compile did to each conv layer, read from a compiled model's trace and the call sites capture recorded
in it (``trace.inductor_record``): the extern conv call and its time, Inductor's generated kernels that took the
layer's neighbours (BatchNorm, ReLU, adds) and their time, or the generated kernel the conv itself went into.

Each call of a compiled graph (``## Call CompiledFxGraph``) runs the graph's kernel calls in code order; the events
nested in it are matched to the recorded call sites in that order (allocations and views in between match none).
"""

from __future__ import annotations

import functools
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from convdoctor.analyzer.conv.conv_ops import is_conv_op
from convdoctor.analyzer.trace.inductor_record import (
    COMPILED_BY_MODEL_FILE,
    CallSite,
    InductorRecord,
    Shapes,
    dims,
    matches,
    recorded_inductor,
)
from convdoctor.analyzer.trace.profile import Op, Profile

GRAPH_CALL = "## Call CompiledFxGraph"  # the annotation around one call of a compiled graph's generated code
CONV_CLASS = re.compile(r"(Lazy)?Conv(Transpose)?[123]d")
NORM_CLASS = re.compile(r"BatchNorm[123]d|SyncBatchNorm")
PROVENANCE = "provenance"  # Inductor's provenance tracking named the FX nodes, whose nn_module_stack names modules
ORDER_AND_SHAPES = "order and shapes"  # an extern conv call matched to the eager step's conv calls
UNATTRIBUTED = "unattributed"  # neither could tell


@functools.cache
def is_extern_conv(event_name: str) -> bool:
    """A library convolution a compiled graph calls: ATen's (``aten::convolution``) or oneDNN's fused ones."""
    return is_conv_op(event_name) or event_name.startswith("mkldnn::_convolution")


@dataclass(frozen=True)
class KernelTime:
    """One kernel call site of a compiled graph, with its time in the trace."""

    kernel: str  # the trace's event name (a generated kernel's name without its graph_<n>_ prefix)
    modules: tuple[str, ...]  # the modules whose work it does
    attribution: str  # how ``modules`` was found: PROVENANCE, ORDER_AND_SHAPES or UNATTRIBUTED
    extern: bool  # a library conv call (else Inductor's generated code, or another library call)
    calls_per_step: float
    ms_per_step: float | None  # None: the call was not seen in the trace


@dataclass(frozen=True)
class CompiledLayer:
    """What compile did to one conv module."""

    name: str
    extern: tuple[KernelTime, ...]  # the library conv calls that compute it (a fused one takes its post-ops too)
    fused: tuple[KernelTime, ...]  # generated kernels holding its work or its neighbours'
    neighbours: tuple[str, ...]  # the other modules those calls do the work of (BatchNorm, ReLU, the block's add)

    @property
    def fused_into(self) -> str | None:
        """The generated kernel the conv itself went into, when no library call computes it."""
        return self.fused[0].kernel if not self.extern and self.fused else None

    @property
    def attribution(self) -> str:
        """How its calls were found to be this layer's: ORDER_AND_SHAPES when any was, else PROVENANCE."""
        return ORDER_AND_SHAPES if any(k.attribution == ORDER_AND_SHAPES for k in self.extern) else PROVENANCE

    @property
    def ms_per_step(self) -> float | None:
        """Its library and generated calls' time per step; None when none of them was seen in the trace."""
        return _seen_ms((*self.extern, *self.fused))

    @property
    def fused_ms_per_step(self) -> float | None:
        """Its generated kernels' time per step; None when none of them was seen in the trace."""
        return _seen_ms(self.fused)


def _seen_ms(kernels: tuple[KernelTime, ...]) -> float | None:
    seen = [k.ms_per_step for k in kernels if k.ms_per_step is not None]
    return sum(seen) if seen else None


@dataclass(frozen=True)
class CompiledView:
    """A compiled model's trace, per conv layer, beside the eager step."""

    compiled_by: str  # inductor_record.COMPILED_BY_*
    freezing: bool
    compile_s: float | None
    step_ms: float  # per profiled step of the compiled model
    unprofiled_step_ms: float | None  # timed without the profiler at capture
    eager_unprofiled_step_ms: float | None
    layers: tuple[CompiledLayer, ...]  # in the order the compiled code calls them
    kernels: tuple[KernelTime, ...]  # every call site, in code order
    folded: tuple[str, ...]  # BatchNorm modules no call works for: folded into their convs' weights (freezing)
    unmatched_ms_per_step: float  # time of the events in the graph calls that match no call site (allocations)
    notes: tuple[str, ...]  # what the trace could not tell

    @property
    def by_model_file(self) -> bool:
        """The model file returned a compiled model (what the user runs), not `profile --compiled`'s copy."""
        return self.compiled_by == COMPILED_BY_MODEL_FILE

    @property
    def step_ratio(self) -> float | None:
        """Eager step over compiled step, each timed once without the profiler at capture (two readings, not an
        interleaved A/B measurement); None when either is missing."""
        if self.unprofiled_step_ms is None or self.eager_unprofiled_step_ms is None:
            return None
        return self.eager_unprofiled_step_ms / self.unprofiled_step_ms

    @property
    def attributions(self) -> tuple[str, ...]:
        """How the layers' calls were found (PROVENANCE, ORDER_AND_SHAPES), each once."""
        return tuple(sorted({layer.attribution for layer in self.layers}))

    @property
    def slowest_first(self) -> tuple[CompiledLayer, ...]:
        """The layers, those whose calls take longest first (unknown times last)."""
        return tuple(sorted(self.layers, key=lambda layer: -(layer.ms_per_step or 0.0)))

    def handled(self, module: str) -> str | None:
        """How compile took a (BatchNorm) module's own pass away: ``fused into <kernel>`` when its work runs inside a
        call that does other modules' work too, ``folded`` when no call works for it, else None."""
        if module in self.folded:
            return "folded"
        calls = [k for k in self.kernels if module in k.modules]
        if calls and all(len(k.modules) > 1 for k in calls):
            return f"fused into {calls[0].kernel}"
        return None


def compiled_view(profile: Profile) -> CompiledView | None:
    """The per-layer view of a trace whose metadata records a compile; None for other traces."""
    record = recorded_inductor(profile)
    if record is None:
        return None
    notes: list[str] = []
    graph_calls = [op for op in profile.ops if op.name.startswith(GRAPH_CALL) and _in_steps(profile, op)]
    steps = profile.step_count
    on_device = profile.has_device_events
    seen = [[_Seen() for _ in graph] for graph in record.graphs]
    unmatched_us = 0.0
    for call in graph_calls:
        graph, assigned = _best_graph(record, call.children)
        for child, site in assigned:
            time_us = child.device_time_us() if on_device else child.dur_us
            if site is None:
                unmatched_us += time_us
            else:
                seen[graph][site].add(child, time_us)
    if not any(record.graphs):
        notes.append("Inductor recorded no provenance for this compile (a cached graph, or a backend other than "
                     "Inductor): the trace cannot tell which layer each kernel call came from.")
    if record.timed_under_load_cores is not None:
        notes.append(f"The compiled step was timed while other processes kept {record.timed_under_load_cores:g} "
                     "cores busy: its time, and its comparison with the eager step, may be off.")
    if not graph_calls:
        notes.append(f"The trace has no '{GRAPH_CALL}' events in its steps: no kernel call could be timed.")
    kernels = tuple(_kernel_time(site, modules, how, seen[g][i], steps)
                    for g, graph in enumerate(record.graphs)
                    for i, (site, (modules, how)) in enumerate(zip(graph, _attribute(record, graph, seen[g]))))
    unseen = sorted({k.kernel for k in kernels if k.ms_per_step is None})
    if graph_calls and unseen:
        notes.append(f"{len(unseen)} recorded kernel calls were not seen in the trace's graph calls "
                     f"({', '.join(unseen[:3])}{'…' if len(unseen) > 3 else ''}): their time is unknown, not zero.")
    layers = _layers(record, kernels)
    convs = [name for name, cls in record.module_classes.items() if CONV_CLASS.fullmatch(cls)]
    missing = [name for name in convs if name not in {layer.name for layer in layers}]
    if missing and any(record.graphs):
        notes.append(f"{len(missing)} conv modules have no kernel call found for them in the compiled graphs "
                     f"({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}): not called, or neither provenance "
                     "nor order and shapes could tell their calls.")
    worked = {m for k in kernels for m in k.modules}
    folded = tuple(name for name, cls in record.module_classes.items()
                   if NORM_CLASS.fullmatch(cls) and name not in worked and any(record.graphs))
    spans = [end - start for _, start, end in profile.step_spans]
    return CompiledView(
        compiled_by=record.compiled_by, freezing=record.freezing, compile_s=record.compile_s,
        step_ms=(statistics.fmean(spans) / 1e3) if spans else 0.0,
        unprofiled_step_ms=None if record.unprofiled_step_us is None else record.unprofiled_step_us / 1e3,
        eager_unprofiled_step_ms=(None if record.eager_unprofiled_step_us is None
                                  else record.eager_unprofiled_step_us / 1e3),
        layers=layers, kernels=kernels, folded=folded, unmatched_ms_per_step=unmatched_us / 1e3 / steps,
        notes=tuple(notes))


@dataclass
class _Seen:
    """A call site's events in the trace: how many, their time, and the first one."""

    calls: int = 0
    time_us: float = 0.0
    first: Op | None = None

    def add(self, event: Op, time_us: float) -> None:
        self.calls += 1
        self.time_us += time_us
        self.first = self.first or event


def _in_steps(profile: Profile, op: Op) -> bool:
    return not profile.steps or profile.step_of(op.ts_us) is not None


def _best_graph(record: InductorRecord, events: list[Op]) -> tuple[int, list[tuple[Op, int | None]]]:
    """The recorded graph whose call sites most of ``events`` match in order, and each event's site (None: none)."""
    best: tuple[int, int, list[tuple[Op, int | None]]] = (-1, 0, [(e, None) for e in events])
    for index, graph in enumerate(record.graphs):
        assigned = _align(events, graph)
        hits = sum(site is not None for _, site in assigned)
        if hits > best[0]:
            best = (hits, index, assigned)
    return best[1], best[2]


def _align(events: list[Op], sites: tuple[CallSite, ...]) -> list[tuple[Op, int | None]]:
    """Each event with the next call site (in code order) it is a call of, or None."""
    assigned: list[tuple[Op, int | None]] = []
    position = 0
    for event in sorted(events, key=lambda e: e.ts_us):
        found = next((i for i in range(position, len(sites)) if matches(event.name, sites[i])), None)
        assigned.append((event, found))
        if found is not None:
            position = found + 1
    return assigned


def _attribute(record: InductorRecord, sites: tuple[CallSite, ...], seen: list[_Seen]
               ) -> list[tuple[tuple[str, ...], str]]:
    """Each call site's modules and how they were found. An extern conv call keeps its provenance when it names a
    conv module called with the shapes the call's trace event records; else it takes the first conv call of the eager
    step, not claimed yet, with those shapes (provenance of freezing's fused mkldnn convs names other nodes)."""
    classes = record.module_classes
    result = [(site.modules, PROVENANCE) for site in sites]
    unclaimed = list(record.eager_convs)
    pending: list[tuple[int, Shapes | None]] = []
    for index, site in enumerate(sites):
        if not is_extern_conv(site.trace_name):
            continue
        shapes = conv_shapes(seen[index].first) if seen[index].first is not None else None
        convs = [m for m in site.modules if CONV_CLASS.fullmatch(classes.get(m, ""))]
        claim = next((c for c in unclaimed if convs and c[0] == convs[0] and shapes in (None, c[1])), None)
        if claim is None:
            pending.append((index, shapes))
        else:
            unclaimed.remove(claim)
    for index, shapes in pending:
        claim = next((c for c in unclaimed if shapes is not None and c[1] == shapes), None)
        if claim is None:
            result[index] = ((), UNATTRIBUTED)
        else:
            unclaimed.remove(claim)
            result[index] = ((claim[0],), ORDER_AND_SHAPES)
    return result


def conv_shapes(event: Op) -> Shapes | None:
    """A conv call's input and weight shapes from its trace event's ``Input Dims``: the weight is the last tensor of
    the input's rank, the input the first one, or the second in oneDNN's in-place binary conv
    (``mkldnn::_convolution_pointwise_``: the addend it writes into comes first)."""
    shapes = [dims(d) for d in event.input_dims]
    if not shapes or shapes[0] is None or len(shapes[0]) not in (3, 4, 5):
        return None
    tensors = [s for s in shapes if s is not None and len(s) == len(shapes[0])]
    if len(tensors) < 2:
        return None
    in_place = event.name.endswith("_") and len(tensors) >= 3
    return tensors[1 if in_place else 0], tensors[-1]


def _kernel_time(site: CallSite, modules: tuple[str, ...], how: str, seen: _Seen, steps: int) -> KernelTime:
    name = site.trace_name
    return KernelTime(kernel=name, modules=modules, attribution=how, extern=is_extern_conv(name),
                      calls_per_step=seen.calls / steps, ms_per_step=seen.time_us / 1e3 / steps if seen.calls else None)


def _layers(record: InductorRecord, kernels: tuple[KernelTime, ...]) -> tuple[CompiledLayer, ...]:
    """Each conv module that a call works for, in code order, with its extern calls and the generated kernels that do
    the work of the modules right after it (or its own, such as its input's layout, when they hold no other conv's
    followers: a kernel that finishes one block and lays out the next conv's input is the first block's)."""
    classes = record.module_classes
    followers = _followers(record)
    follower_of = {module: conv for conv, names in followers.items() for module in names}
    order = list(dict.fromkeys(m for k in kernels for m in k.modules if CONV_CLASS.fullmatch(classes.get(m, ""))))
    layers = []
    for name in order:
        mine = followers.get(name, set())

        def belongs(kernel: KernelTime, name: str = name, mine: set[str] = mine) -> bool:
            modules = set(kernel.modules)
            return bool(modules & mine) or (name in modules and all(follower_of.get(m, name) == name for m in modules))

        extern = tuple(k for k in kernels if k.extern and name in k.modules)
        fused = tuple(k for k in kernels if not k.extern and belongs(k))
        neighbours = tuple(dict.fromkeys(m for k in (*extern, *fused) for m in k.modules if m != name
                                         and not CONV_CLASS.fullmatch(classes.get(m, ""))
                                         and follower_of.get(m, name) == name))
        layers.append(CompiledLayer(name, extern, fused, neighbours))
    return tuple(layers)


def _followers(record: InductorRecord) -> dict[str, set[str]]:
    """The leaf modules of the same parent that the eager step calls once, right after a conv and before the next
    conv: its BatchNorm, and its ReLU when the ReLU module is its own (a block's ReLU module called twice is no
    single conv's)."""
    calls = Counter(record.eager_order)
    after: dict[str, set[str]] = {}
    current = None
    for name in record.eager_order:
        if CONV_CLASS.fullmatch(record.module_classes.get(name, "")):
            current = name
        elif current is not None and calls[name] == 1 and name.rpartition(".")[0] == current.rpartition(".")[0]:
            after.setdefault(current, set()).add(name)
    return after
