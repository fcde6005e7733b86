"""CD115 preprocessing-in-forward: input preparation in the model's own forward, before its first convolution."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

from convdoctor.analyzer.conv.layers import (
    CONV_OP,
    DTYPE_NAMES,
    ConvAnalysis,
    TimeBasis,
)
from convdoctor.analyzer.trace.module_scope import ROOT_NAME
from convdoctor.analyzer.trace.profile import EventKind, Op
from convdoctor.rules.base import Finding, Requirement, SavingBound, Severity

# What an input-preparation op looks like, by its aten name; ops of no kind here are listed but not counted.
KINDS = (
    ("resize", re.compile(r"^aten::(_?upsample\w*|interpolate|grid_sampler\w*|affine_grid\w*|_?resize\w*|pad|"
                          r"constant_pad_nd|reflection_pad\w*|replication_pad\w*|center_crop|crop)$")),
    ("dtype", re.compile(r"^aten::(to|_to_copy|type_as|_autocast_to\w*|float|half|bfloat16)$")),
    ("normalize", re.compile(r"^aten::(sub|sub_|rsub|div|div_|true_divide|mul|mul_|add|add_|addcmul|clamp|clamp_|"
                             r"clip|normalize|sqrt|rsqrt|mean|std|var|std_mean|var_mean)$")),
    ("layout", re.compile(r"^aten::(permute|contiguous|transpose|clone|copy_|flip|unsqueeze|squeeze|reshape|view|"
                          r"expand|movedim|flatten|unflatten|cat|stack|narrow|slice|select|index_select)$")),
)

TRACE_DTYPES = {"unsigned char": "uint8", "signed char": "int8", "short int": "int16", "int": "int32",
                "long int": "int64", "bool": "bool"}  # input type names in Kineto traces that DTYPE_NAMES lacks

SNIPPET = """\
# before: forward(x) gets uint8 N×3×256×256 and converts, resizes and normalizes it on every step
# after: the DataLoader workers do it, in parallel with the model (or do it once, offline, per dataset)
from torchvision.transforms import v2
transform = v2.Compose([
    v2.Resize((224, 224), antialias=True),
    v2.ToDtype(torch.float32, scale=True),
    v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])
dataset = torchvision.datasets.ImageFolder(root, transform=transform)
loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=8, pin_memory=True)
# and the model's forward starts at its first layer: return self.head(self.features(x))"""


def op_kind(name: str) -> str | None:
    """``resize``, ``dtype``, ``normalize`` or ``layout`` for an input-preparation op; None for any other op."""
    return next((kind for kind, pattern in KINDS if pattern.match(name)), None)


def root_calls(analysis: ConvAnalysis) -> list[Op]:
    """The module-scope annotations of the model's own calls (qualified name ``<model>``) in the profiled steps."""
    profile = analysis.profile
    return [op for op in profile.scope_ops if op.scope.qualified_name == ROOT_NAME
            and (not profile.steps or profile.step_of(op.ts_us) is not None)]


def first_conv(root: Op) -> Op | None:
    """The earliest convolution operator anywhere under a call of the model."""
    convs = (op for op in root.descendants() if op.kind is EventKind.CPU_OP and CONV_OP.match(op.name))
    return min(convs, key=lambda op: op.ts_us, default=None)


def root_scope_ops(node: Op) -> Iterator[Op]:
    """The outermost operators under ``node`` that run in its own scope, not in a child module's call."""
    for child in node.children:
        if child.scope is not None:
            continue  # a child module call: its ops are that module's
        if child.kind is EventKind.CPU_OP:
            yield child
        else:
            yield from root_scope_ops(child)  # e.g. a user's record_function inside the forward


def ops_before_first_conv(root: Op) -> list[Op]:
    """Operators of the model's own forward (root scope) that end before its first convolution starts."""
    conv = first_conv(root)
    if conv is None:
        return []
    return [op for op in root_scope_ops(root) if op.end_us <= conv.ts_us]


@dataclass(frozen=True)
class PreparationOp:
    """The calls of one input-preparation op with the same input shapes."""

    op: str
    kind: str  # resize, dtype, normalize or layout
    calls_per_step: float
    time_ms_per_step: float
    share: float  # of step time
    input_shapes: list[list[int]]
    input_dtypes: list[str]


@dataclass(frozen=True)
class PreprocessingInForwardEvidence:
    """Input-preparation ops at the model's own scope before its first conv, with what they cost per step."""

    share: float  # of step time, all counted ops
    time_ms_per_step: float
    time_basis: str  # "device" or "host"
    input_shape: list[int] | None  # of the earliest counted op's first input
    input_dtype: str | None  # as above
    ops: list[PreparationOp]  # slowest first
    not_counted: list[str]  # root-scope ops before the first conv of no preparation kind

    def message(self) -> str:
        kinds = dict.fromkeys(row.kind for row in self.ops)
        by_name: dict[str, float] = defaultdict(float)
        for row in self.ops:
            by_name[row.op] += row.time_ms_per_step
        slowest = sorted(by_name.items(), key=lambda item: item[1], reverse=True)
        listed = ", ".join(f"{name} {ms:.2f} ms" for name, ms in slowest[:3])
        more = f" and {len(slowest) - 3} more" if len(slowest) > 3 else ""
        shape = "×".join(map(str, self.input_shape)) if self.input_shape else ""
        described = " ".join(part for part in (self.input_dtype or "", shape) if part) or "model"
        return (f"{ROOT_NAME} forward spends {self.time_ms_per_step:.2f} ms per step ({self.share:.0%}) on "
                f"{'/'.join(kinds)} of its {described} input before the first conv: {listed}{more}")


class PreprocessingInForwardRule:
    """Resizing, dtype conversion and normalization of the input in the model's forward, before its first conv."""

    id = "CD115"
    name = "preprocessing-in-forward"
    summary = "The model's forward prepares its input (resize, dtype conversion, normalization) on every step"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.MODULE_SCOPES})
    min_share = 0.02  # Options: smallest share of the step time, summed over the counted ops, that is reported
    doc = """\
## What it detects
Operators that run in the model's own `forward` (the root module's scope, outside any child module call)
and end before the first convolution of the call: resizing (`aten::upsample_*`, `_upsample_*_aa`,
`grid_sampler`, padding), dtype conversions (`aten::to`, `aten::_to_copy`), normalization (`sub`, `div`,
`mul`, `add`, `clamp`) and layout changes of the input (`permute`, `contiguous`, `copy_`, `reshape`). It is
reported when these ops together take at least `min_share` of the step. Root-scope ops of other kinds are
listed in the evidence but not counted, and preprocessing inside a child module (an `nn.Module` that
normalizes) is not looked at.

## Why it is slow
Work done on the input inside the forward runs on every step, in series with the model, on the device that
should be running convolutions. The same resize and normalization in the DataLoader's worker processes runs in
parallel with the model, and a resize to a fixed size can be done once per dataset, offline. Resizing with
antialiasing is as costly as a small conv layer, and every elementwise pass reads and writes the whole input.

## Example
```python
def forward(self, x):                       # x: uint8 N×3×256×256
    x = x.to(torch.float32) / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - self.mean) / self.std
    return self.head(self.features(x))
```

## Use instead
```python
transform = v2.Compose([v2.Resize((224, 224), antialias=True), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
loader = DataLoader(ImageFolder(root, transform=transform), batch_size=64, num_workers=8)

def forward(self, x):                       # x: float32 N×3×224×224, already normalized
    return self.head(self.features(x))
```
On a GPU, converting on the device may be deliberate (uint8 crosses PCIe in a quarter of the bytes); then
resize offline and keep only the cheap conversion, or let `torch.compile` fuse it into one pass.

## Evidence
The module scopes convdoctor records around every module call: the ops whose module call is the root module
(`<model>`), outside any child module, that end before the first convolution operator of that call; each op's
name, time per step (device time on GPU traces, host time otherwise), share of the step and input shapes and
dtypes (`Input Dims`, `Input type`). The estimated saving is their share of the step: moving them out of the
step can save at most that.

## Options
`min_share` (fraction of step time, default 0.02): smallest summed share of the step in the counted
ops for the finding to be reported.

## References
- https://pytorch.org/vision/stable/transforms.html
- https://pytorch.org/docs/stable/data.html#multi-process-data-loading
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        device = analysis.time_basis is TimeBasis.DEVICE
        steps = analysis.profile.step_count
        counted: dict[tuple[str, str], list[Op]] = defaultdict(list)  # by op name and input shapes
        others: set[str] = set()
        for root in root_calls(analysis):
            for op in ops_before_first_conv(root):
                if op_kind(op.name):
                    counted[(op.name, repr(_tensor_inputs(op)))].append(op)
                else:
                    others.add(op.name)
        if not counted:
            return

        def per_step_us(ops: list[Op]) -> float:
            return sum(op.device_time_us() if device else op.dur_us for op in ops) / steps

        rows = sorted((self._row(analysis, ops, per_step_us(ops), steps) for ops in counted.values()),
                      key=lambda row: row.time_ms_per_step, reverse=True)
        total_us = sum(row.time_ms_per_step for row in rows) * 1e3
        share = analysis.share(total_us)
        if share < self.min_share:
            return
        first_input = min((op for ops in counted.values() for op in ops), key=lambda op: op.ts_us)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= 0.1 else Severity.INFO,
            fix="Move input preparation out of the model's forward into the data pipeline",
            advice=("This work prepares the input and runs on every step, in series with the model. Do it in the "
                    "DataLoader's worker processes (torchvision transforms), where it overlaps the model, and "
                    "resize to a fixed size once per dataset, offline. There is no automatic candidate: staging "
                    "data belongs to your input pipeline, which convdoctor does not see, and a model that no "
                    "longer normalizes its input needs its callers changed. On a GPU, converting uint8 on the "
                    "device can be the better trade (a quarter of the bytes cross PCIe); then keep the cast and "
                    "the normalization and move only the resize out."),
            snippet=SNIPPET,
            layers=[],
            evidence=PreprocessingInForwardEvidence(
                share=share,
                time_ms_per_step=total_us / 1e3,
                time_basis=analysis.time_basis.value,
                input_shape=_shape(first_input),
                input_dtype=_dtype(first_input.input_types[0]) if first_input.input_types else None,
                ops=rows,
                not_counted=sorted(others),
            ),
            estimated_saving=min(share, 1.0),
            saving_bound=SavingBound.AT_MOST,  # taking these ops out of the step saves their time at best
            candidate=None,  # staging data belongs to the user's input pipeline
        )

    def _row(self, analysis: ConvAnalysis, ops: list[Op], time_us: float, steps: int) -> PreparationOp:
        inputs = _tensor_inputs(ops[0])
        return PreparationOp(
            op=ops[0].name,
            kind=op_kind(ops[0].name) or "",  # every counted op has a kind
            calls_per_step=len(ops) / steps,
            time_ms_per_step=time_us / 1e3,
            share=analysis.share(time_us),
            input_shapes=[shape for shape, _ in inputs],
            input_dtypes=[dtype for _, dtype in inputs],
        )


def _tensor_inputs(op: Op) -> list[tuple[list[int], str]]:
    """(shape, dtype) of each tensor input of ``op`` (inputs with dims; scalars and lists have none)."""
    types = list(op.input_types) + [""] * max(0, len(op.input_dims) - len(op.input_types))
    return [(list(dims), _dtype(dtype)) for dims, dtype in zip(op.input_dims, types)
            if isinstance(dims, list) and dims]


def _dtype(name: str) -> str:
    return {**DTYPE_NAMES, **TRACE_DTYPES}.get(name, name)


def _shape(op: Op) -> list[int] | None:
    return list(op.input_dims[0]) if op.input_dims and op.input_dims[0] else None

