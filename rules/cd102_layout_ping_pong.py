"""CD102 layout-ping-pong: the memory format flips between consecutive conv layers within one step."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.conv.layers import (
    CONV_OP,
    ConvAnalysis,
    ConvLayer,
    LayoutConversion,
    MemoryFormat,
    memory_format,
)
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile
from convdoctor.rules.base import Finding, Requirement, SavingBound, Severity

KNOWN = (MemoryFormat.CONTIGUOUS, MemoryFormat.CHANNELS_LAST)
SHORT = {MemoryFormat.CONTIGUOUS: "NCHW", MemoryFormat.CHANNELS_LAST: "NHWC"}


@dataclass(frozen=True)
class NchwSource:
    """A module whose scope holds copies that turn NHWC activations back into NCHW."""

    module: str | None  # qualified name, "<model>" for the model's own forward; None where the trace has no scopes
    class_name: str | None
    calls: tuple[str, ...]  # the outermost operators of the module's own code that make the copies
    in_model_code: bool  # False when the copies run inside a convolution (the library's choice, not the model's)
    per_step: float
    ms_per_step: float


@dataclass(frozen=True)
class ConversionRow:
    """The layout copies charged to one layer by one operator, direction, tensor and module."""

    layer: str
    op: str
    direction: str  # "NHWC->NCHW" or "NCHW->NHWC"
    tensor: str  # "activation", "weight" or "unknown"
    shape: list[int]
    module: str | None  # the module scope the copies run in
    per_step: float
    ms_per_step: float


@dataclass(frozen=True)
class LayoutPingPongEvidence:
    """The conv layers' formats in the order they run, the flips between them, and the copies both ways."""

    layer_formats: dict[str, str]  # MemoryFormat values, "either" for an input that fits both
    channels_last_layers: int
    contiguous_layers: int
    format_flips: int
    flips: list[list[str]]  # [layer, next layer] pairs
    conversions: list[ConversionRow]  # slowest first
    to_nchw_per_step: float
    to_nhwc_per_step: float
    conversion_ms_per_step: float
    conversion_share: float
    nchw_sources: list[dict[str, Any]]  # NchwSource rows (its class_name as "class"), slowest first
    conversion_alone_removes_flips: bool
    copies_per_step: float = field(repr=False, metadata={"serialize": False})
    both_ways: list[str] = field(repr=False, metadata={"serialize": False})  # layers whose copies run in and out

    def message(self) -> str:
        parts: list[str] = []
        if self.flips:
            a, b = self.flips[0]
            first = f"{a} takes {_short(self.layer_formats[a])}, {b} {_short(self.layer_formats[b])}"
            flips = self.format_flips
            parts.append(f"{first}: {flips} format flip{'s' if flips != 1 else ''} between consecutive "
                         f"conv layers ({self.channels_last_layers} NHWC, {self.contiguous_layers} NCHW)")
        else:
            both_ways = self.both_ways
            where = (f"{both_ways[0]}{f' and {len(both_ways) - 1} more' if len(both_ways) > 1 else ''} "
                     f"convert{'s' if len(both_ways) == 1 else ''} in and out" if both_ways else "copies run both ways")
            known = self.channels_last_layers + self.contiguous_layers  # no flips: all in one format
            formats_known = (f"all {known} conv layers take {'NHWC' if self.channels_last_layers else 'NCHW'}"
                             if known else "the trace records no input strides")
            parts.append(f"{formats_known}, yet {where}")
        if self.conversions:
            parts.append(f"{self.copies_per_step:g} layout copies per step ({self.to_nchw_per_step:g} NHWC->NCHW, "
                         f"{self.to_nhwc_per_step:g} NCHW->NHWC) cost {self.conversion_ms_per_step:.2f} ms "
                         f"({self.conversion_share:.1%} of the step)")
        code_sources = [row for row in self.nchw_sources if row["in_model_code"]]
        if code_sources:
            parts.append("NCHW forced by " + ", ".join(_describe(row["module"], row["class"], row["calls"])
                                                       for row in code_sources))
        return "; ".join(parts)


class LayoutPingPongRule:
    """Conv layers that run in different memory formats in one step, with copies converting back and forth."""

    id = "CD102"
    name = "layout-ping-pong"
    summary = "The memory format flips between conv layers: layout copies run both ways within a step"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_conversion_share = 0.0  # Options: smallest share of step time in layout copies that is reported
    warning_share = 0.01  # Options: share of step time in layout copies from which the finding is a warning
    doc = """\
## What it detects
A step whose convolutions do not agree on one memory format: some conv layers take channels_last (NHWC)
activations and others contiguous (NCHW) ones, and/or the layout copies charged to the conv layers go in both
directions (NHWC -> NCHW and NCHW -> NHWC). It names the modules whose code turns NHWC back into NCHW (an
explicit `.contiguous()`, a `.clone()`, a `.to()` or a copy in a module's `forward`) and says whether those copies
run in the model's own code or inside a convolution.

## Why it is slow
Each flip is a full read and write of an activation tensor that does no math: an `aten::copy_` on CPU, a
`nchwToNhwc`/`nhwcToNchw` transpose kernel on GPU. A conv whose weights and input disagree also reorders its
weights or its input on every call. A model that flips once per block pays this for every block, and the
convolutions on the NCHW side still miss the NHWC kernels that made channels_last worth having.

## Example
```python
class Block(nn.Module):
    def forward(self, x):
        x = self.conv_a(x)      # channels_last in, channels_last out
        x = x.contiguous()      # NHWC -> NCHW copy
        return self.conv_b(x)   # channels_last weights: copies its input back to NHWC

model = Block().to(memory_format=torch.channels_last)
```

## Use instead
```python
class Block(nn.Module):
    def forward(self, x):
        x = self.conv_a(x)
        return self.conv_b(x)   # no .contiguous(): the activation stays NHWC

model = Block().to(memory_format=torch.channels_last)
out = model(x.contiguous(memory_format=torch.channels_last))   # convert the input once, outside the step
```
Converting the model and its input (the candidate convdoctor measures) removes the flips that come from
weights and inputs disagreeing; it cannot remove a `.contiguous()` written in the model's code, which you
have to drop or change to `.contiguous(memory_format=torch.channels_last)`.

## Evidence
Each conv layer's input memory format (`Input Strides` of `aten::convolution`), in the order the layers run
(the start of their module scopes); an input with one channel or one pixel fits both formats ("either") and
never counts as a flip; the layout conversions charged to each layer with their direction, the
tensor they copy (activation or weight), their time per step and the module scope the copy runs in; for the
NHWC -> NCHW copies, the outermost operator of that module's own code that makes them (e.g.
`aten::contiguous`), and whether it is a convolution (the copy is the library's) or not (the model's code).

## Options
`min_conversion_share` (fraction of step time, default 0.0): smallest share of the step spent in layout
copies for the finding to be reported; above 0, formats that differ without any copy are not reported.
`warning_share` (fraction of step time, default 0.01): share of the step spent in layout copies from which
the finding is a warning rather than info.

## References
- https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html
- https://github.com/pytorch/pytorch/wiki/Writing-memory-format-aware-operators
- https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html#tensor-layout
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        steps = profile.step_count
        ordered = _execution_order(profile, [layer for layer in analysis.layers if len(layer.input_shape) in (4, 5)])
        known = [layer for layer in ordered if layer.memory_format in KNOWN and not _fits_both(layer)]
        formats = {fmt: [layer for layer in known if layer.memory_format is fmt] for fmt in KNOWN}
        flips = [(a, b) for a, b in zip(known, known[1:]) if a.memory_format is not b.memory_format]
        charged = [(layer, c) for layer in ordered for c in layer.conversions if c.to_format in KNOWN
                   and c.from_format in KNOWN]
        to_nchw = [c for _, c in charged if c.to_format is MemoryFormat.CONTIGUOUS]
        to_nhwc = [c for _, c in charged if c.to_format is MemoryFormat.CHANNELS_LAST]
        mixed = all(formats.values())
        if not (mixed or (to_nchw and to_nhwc)):
            return
        conversion_us = sum(c.dur_us for _, c in charged) / steps
        share = analysis.share(conversion_us)
        if share < self.min_conversion_share:
            return
        sources = _nchw_sources(profile, to_nchw, {layer.name for layer in analysis.layers}, steps)
        code_sources = [s for s in sources if s.in_model_code]
        involved = {id(layer) for pair in flips for layer in pair} | {id(layer) for layer, _ in charged}
        layers = [layer for layer in ordered if id(layer) in involved]
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= self.warning_share else Severity.INFO,
            fix="Keep one memory format end to end: convert the model and input to channels_last once"
                + (", and drop the copies in the model's code that change it" if code_sources else ""),
            advice=_advice(code_sources, [layer.name for layer in layers if layer.conversions]),
            snippet=_snippet(code_sources),
            layers=[layer.name for layer in layers],
            evidence=LayoutPingPongEvidence(
                layer_formats={layer.name: "either" if _fits_both(layer) else layer.memory_format.value
                               for layer in ordered},
                channels_last_layers=len(formats[MemoryFormat.CHANNELS_LAST]),
                contiguous_layers=len(formats[MemoryFormat.CONTIGUOUS]),
                format_flips=len(flips),
                flips=[[a.name, b.name] for a, b in flips],
                conversions=_conversion_rows(charged, steps),
                to_nchw_per_step=len(to_nchw) / steps,
                to_nhwc_per_step=len(to_nhwc) / steps,
                conversion_ms_per_step=conversion_us / 1e3,
                conversion_share=share,
                nchw_sources=[_source_row(s) for s in sources],
                conversion_alone_removes_flips=not code_sources,
                copies_per_step=len(charged) / steps,
                both_ways=[layer.name for layer in ordered if {c.to_format for c in layer.conversions} >= set(KNOWN)],
            ),
            estimated_saving=analysis.saving_share(conversion_us) if conversion_us > 0 else None,
            saving_bound=SavingBound.PART,
            candidate=Candidate(
                title="model and inputs in channels_last" + (" (the model's own NCHW copies stay)"
                                                             if code_sources else ""),
                transform=to_channels_last,
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
            ),
        )


def _execution_order(profile: Profile, layers: list[ConvLayer]) -> list[ConvLayer]:
    """The layers in the order they first run: by the start of their module scope, then their call index."""
    first_start: dict[str, float] = {}
    for op in profile.scope_ops:
        first_start.setdefault(op.scope.qualified_name, op.ts_us)

    def key(layer: ConvLayer) -> tuple[float, int]:
        scope = layer.name if layer.name in first_start else layer.name.rpartition(":")[0]
        return first_start.get(scope, float("inf")), _call_index(layer.name)

    return sorted(layers, key=key)  # stable: layers with no scope keep the analysis order


def _fits_both(layer: ConvLayer) -> bool:
    """One channel or one pixel: the same strides are NCHW and NHWC, so the layer's input cannot flip."""
    shape = layer.input_shape
    return shape[1] == 1 or math.prod(shape[2:]) == 1


def _call_index(name: str) -> int:
    """k of a layer named ``scope:conv2d#k`` (several convs in one module, or no module scopes), else 0."""
    tail = name.rpartition("#")[2]
    return int(tail) if "#" in name and tail.isdigit() else 0


def _nchw_sources(profile: Profile, to_nchw: list[LayoutConversion], layer_names: set[str],
                  steps: int) -> list[NchwSource]:
    """The modules whose scope holds the NHWC -> NCHW copies, with the operators of their code that make them."""
    by_module: dict[str | None, list[LayoutConversion]] = defaultdict(list)
    for conversion in to_nchw:
        by_module[conversion.op_module].append(conversion)
    classes = {op.scope.qualified_name: op.scope.class_name for op in profile.scope_ops}
    calls: dict[str | None, list[Op]] = defaultdict(list)
    for op in profile.ops:
        if op.name != "aten::copy_":  # most events: checked first (_is_copy_to_nchw checks it again)
            continue
        module = op.module.qualified_name if op.module is not None else None
        if module in by_module and _is_copy_to_nchw(op):
            top = _outermost_op(op)
            if top not in calls[module]:
                calls[module].append(top)
    sources = []
    for module, conversions in by_module.items():
        tops = calls.get(module, [])
        code_tops = [top for top in tops if not CONV_OP.match(top.name)]
        host_copies = any(c.source != "kernel" for c in conversions)  # transpose kernels run inside a conv
        # A host copy whose operator was not found: a conv module's own copies are the library's.
        in_code = bool(code_tops) if tops else host_copies and module not in layer_names
        names = tuple(dict.fromkeys(top.name for top in (code_tops or tops)))
        sources.append(NchwSource(
            module=module, class_name=classes.get(module) if module is not None else None, calls=names,
            in_model_code=in_code, per_step=len(conversions) / steps,
            ms_per_step=sum(c.dur_us for c in conversions) / steps / 1e3))
    return sorted(sources, key=lambda s: s.ms_per_step, reverse=True)


def _is_copy_to_nchw(op: Op) -> bool:
    if op.kind is not EventKind.CPU_OP or op.name != "aten::copy_":
        return False
    if len(op.input_dims) < 2 or len(op.input_strides) < 2 or op.input_dims[0] != op.input_dims[1]:
        return False
    dst = memory_format(op.input_dims[0], op.input_strides[0])
    src = memory_format(op.input_dims[1], op.input_strides[1])
    return dst is MemoryFormat.CONTIGUOUS and src is MemoryFormat.CHANNELS_LAST


def _outermost_op(op: Op) -> Op:
    """The operator the module's code called: the outermost operator around ``op`` in the same module scope."""
    top = op
    for ancestor in op.ancestors():
        if ancestor.kind is not EventKind.CPU_OP or ancestor.module_call is not op.module_call:
            break
        top = ancestor
    return top


def _conversion_rows(charged: list[tuple[ConvLayer, LayoutConversion]], steps: int) -> list[ConversionRow]:
    """The conversions grouped by layer, operator, direction, tensor and module, with count and time per step."""
    groups: dict[tuple[Any, ...], list[LayoutConversion]] = defaultdict(list)
    for layer, c in charged:
        tensor = "unknown" if not c.shape else "weight" if c.shape == layer.weight_shape else "activation"
        groups[(layer.name, c.name, f"{SHORT[c.from_format]}->{SHORT[c.to_format]}", tensor, c.op_module)].append(c)
    rows = [ConversionRow(layer=layer, op=op, direction=direction, tensor=tensor, shape=list(group[0].shape),
                          module=module, per_step=len(group) / steps,
                          ms_per_step=sum(c.dur_us for c in group) / steps / 1e3)
            for (layer, op, direction, tensor, module), group in groups.items()]
    return sorted(rows, key=lambda row: row.ms_per_step, reverse=True)


def _source_row(source: NchwSource) -> dict[str, Any]:
    return {"module": source.module, "class": source.class_name, "calls": list(source.calls),
            "in_model_code": source.in_model_code, "per_step": source.per_step, "ms_per_step": source.ms_per_step}


def _short(value: str) -> str:
    """A layer_formats value as NHWC or NCHW."""
    return SHORT[MemoryFormat(value)]


def _describe(module: str | None, class_name: str | None, calls: Sequence[str]) -> str:
    """Where an NCHW source's copies run: its calls in its class's forward."""
    place = module or "code outside any module"
    where = f"{class_name}.forward ({place})" if class_name else place
    return f"{'/'.join(calls)} in {where}" if calls else where


def _advice(code_sources: list[NchwSource], converting: list[str]) -> str:
    one_format = ("Pick one memory format for the whole step, channels_last for convolutions, and convert the model's "
                  "parameters and the input once, outside the step.")
    if code_sources:
        where = "; ".join(_describe(s.module, s.class_name, s.calls) for s in code_sources)
        return (f"{one_format} The NHWC -> NCHW copies run in the model's own code: {where}. Converting the model "
                "to channels_last will not remove them. Drop those calls, or give them "
                "memory_format=torch.channels_last, then convert model and input once. The measured candidate only "
                "converts the model and inputs, so expect it to keep these flips; the measurement says what it is "
                "worth as it stands.")
    shown = ", ".join(converting[:5]) + (f" and {len(converting) - 5} more" if len(converting) > 5 else "")
    detail = (f" The copies run inside the convolutions ({shown}), where weights, inputs and the kernel the "
              "library picked disagree on the format, not in the model's own code." if converting
              else " The flips come from conv weights and inputs in different formats.")
    return f"{one_format}{detail} Converting the model and input to channels_last removes them."


def _snippet(code_sources: list[NchwSource]) -> str:
    lines = ["model = model.to(memory_format=torch.channels_last)",
             "x = x.contiguous(memory_format=torch.channels_last)  # 5-D inputs: torch.channels_last_3d",
             "out = model(x)"]
    for source in code_sources:
        owner = f"{source.class_name}.forward" if source.class_name else "the forward"
        calls = ", ".join(source.calls) or "the copy"
        lines.append(f"# in {owner} ({source.module or 'no module'}): {calls} turns NHWC into NCHW; drop it, "
                     "or keep the format:")
        lines.append("#     y = y.contiguous(memory_format=torch.channels_last)")
    return "\n".join(lines)
