"""Conv-layer records from a Profile: shapes, time, FLOPs, bytes, intensity, memory format, layout conversions."""

from __future__ import annotations

import bisect
import enum
import functools
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from convdoctor.analyzer.conv.communication import CommView, communication
from convdoctor.analyzer.conv.conv_ops import CONV_OP as CONV_OP  # the rules' conv check, read from here too
from convdoctor.analyzer.conv.conv_ops import is_conv_op
from convdoctor.analyzer.conv.gpu_timeline import GpuTimeline, gpu_timeline
from convdoctor.analyzer.conv.job_view import JobView
from convdoctor.analyzer.trace.profile import (
    EventKind,
    Kernel,
    Op,
    Profile,
    Step,
)

if TYPE_CHECKING:
    from convdoctor.analyzer.conv.compiled import CompiledView

# The conv operators that only dispatch: the ones below them name the implementation (mkldnn_convolution, thnn_conv2d).
DISPATCH_CONV_OPS = frozenset({"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::conv_transpose1d",
                               "aten::conv_transpose2d", "aten::conv_transpose3d", "aten::convolution",
                               "aten::_convolution", "aten::_convolution_mode"})
CONV_BACKWARD_NODE = re.compile(r"^(?!autograd::)\w*Conv\w*Backward\w*$")
CONV_BACKWARD_OP = re.compile(r"conv\w*_backward", re.IGNORECASE)  # the aten operator inside a conv backward node
BACKWARD_OP = re.compile(r"Backward|^autograd::engine")
CONV_MODULE_CLASS = re.compile(r"Conv(Transpose)?[123]d")
REORDER_OPS = frozenset({"aten::to_mkldnn", "aten::to_dense", "aten::mkldnn_reorder_conv2d_weight",
                         "aten::mkldnn_reorder_conv3d_weight"})
CONVERSION_OPS = REORDER_OPS | {"aten::copy_"}  # the operators a host layout conversion can be
TRANSPOSE_KERNEL = re.compile(r"nchwToNhwc|nhwcToNchw|nchw2nhwc|nhwc2nchw", re.IGNORECASE)
ELEMENT_BYTES = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "half": 2, "bfloat16": 2,
                 "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1}
DTYPE_NAMES = {"float": "float32", "double": "float64", "c10::Half": "float16", "c10::BFloat16": "bfloat16"}


# Name checks remembered per name: a trace repeats a few hundred names over hundreds of thousands of events.
@functools.cache
def is_conv_backward_node(name: str) -> bool:
    """The autograd node of a convolution's backward (CONV_BACKWARD_NODE)."""
    return CONV_BACKWARD_NODE.match(name) is not None


@functools.cache
def is_transpose_kernel(name: str) -> bool:
    """A kernel that converts between NCHW and NHWC (TRANSPOSE_KERNEL)."""
    return TRANSPOSE_KERNEL.search(name) is not None


class MemoryFormat(str, enum.Enum):
    """How a 4-D/5-D activation is laid out in memory."""

    CONTIGUOUS = "contiguous"  # NCHW / NCDHW
    CHANNELS_LAST = "channels_last"  # NHWC / NDHWC
    OTHER = "other"
    UNKNOWN = "unknown"


class TimeBasis(str, enum.Enum):
    """Which clock a layer's time is read from."""

    DEVICE = "device"  # GPU kernel time launched by the layer
    HOST = "host"  # CPU operator time


def memory_format(shape: list[int], strides: list[int]) -> MemoryFormat:
    """The memory format that ``strides`` give a tensor of ``shape``; contiguous wins where both fit."""
    if len(shape) not in (4, 5) or len(strides) != len(shape):
        return MemoryFormat.UNKNOWN
    if _strides_match(shape, strides, list(range(len(shape)))):
        return MemoryFormat.CONTIGUOUS
    channels_last_order = [0, *range(2, len(shape)), 1]  # N, spatial..., C from outermost to innermost
    if _strides_match(shape, strides, channels_last_order):
        return MemoryFormat.CHANNELS_LAST
    return MemoryFormat.OTHER


def _strides_match(shape: list[int], strides: list[int], order: list[int]) -> bool:
    expected = 1
    for dim in reversed(order):
        if shape[dim] != 1 and strides[dim] != expected:
            return False
        expected *= shape[dim]
    return True


@dataclass
class LayoutConversion:
    """A copy that changes memory format (or a oneDNN reorder / cuDNN transpose kernel) charged to a layer."""

    name: str
    source: str  # "cpu_op" or "kernel"
    dur_us: float
    from_format: MemoryFormat
    to_format: MemoryFormat
    shape: list[int] = field(default_factory=list)
    op_module: str | None = None  # qualified name of the module scope the converting op runs in


@dataclass
class ConvLayer:
    """One convolution of the model, over all its calls in the profiled steps."""

    name: str
    module_class: str | None
    op: str  # conv1d | conv2d | conv3d | conv_transpose2d ...
    input_shape: list[int]
    weight_shape: list[int]
    output_shape: list[int] | None
    stride: list[int] | None
    padding: list[int] | None
    dilation: list[int] | None
    groups: int | None
    transposed: bool
    dtype: str
    memory_format: MemoryFormat
    calls: int = 0
    forward_us: float = 0.0
    backward_us: float = 0.0
    conversions: list[LayoutConversion] = field(default_factory=list)
    kernels: list[Kernel] = field(default_factory=list)  # device events of all calls, forward and backward
    # The conv operators below the dispatching ones in its forward calls, in order of first call: which implementation
    # ATen chose (aten::mkldnn_convolution, aten::thnn_conv2d -> aten::_slow_conv2d_forward, aten::slow_conv3d ...);
    # empty where it calls the library without an operator of its own (oneDNN deconvolution, cuDNN, compiled code).
    implementations: list[str] = field(default_factory=list)
    flops: int | None = None  # per call, forward
    bytes: int | None = None  # per call, forward: input + weight + bias + output
    calls_per_step: float = 0.0
    time_per_step_us: float = 0.0
    bias_numel: int = 0
    element_bytes: int = 4

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte moved, per forward call."""
        return self.flops / self.bytes if self.flops and self.bytes else None

    @property
    def kernel_names(self) -> list[str]:
        """The distinct names of the layer's device events, in order of first launch."""
        return list(dict.fromkeys(k.name for k in self.kernels))

    @property
    def conversion_us(self) -> float:
        return sum(c.dur_us for c in self.conversions)


@dataclass
class ConvAnalysis:
    """The conv layers of a profile with the step-level totals rules and reports need."""

    profile: Profile = field(repr=False)
    layers: list[ConvLayer]  # slowest first
    time_basis: TimeBasis
    step_time_us: float
    notes: list[str] = field(default_factory=list)  # what could not be computed, and why
    calls: list[Op] = field(default_factory=list, repr=False)  # the outermost conv operators, in trace order
    backward_nodes: list[Op] = field(default_factory=list, repr=False)  # conv backward nodes, in trace order
    job: JobView | None = None  # set for one rank of a data-parallel job: what all its ranks' traces say
    compiled: CompiledView | None = None  # set when a compiled model's trace was captured (compiled_view)

    @cached_property
    def gpu_timeline(self) -> GpuTimeline | None:
        """Busy and idle GPU time per step on the busiest device; None when the trace has no device events."""
        return gpu_timeline(self.profile)

    @cached_property
    def communication(self) -> CommView | None:
        """Collective communication per step and its overlap with compute; None when the trace has none."""
        return communication(self.profile)

    @property
    def conv_time_us(self) -> float:
        """Conv time per step, including the layout conversions charged to the layers."""
        return sum(layer.time_per_step_us for layer in self.layers)

    @property
    def conv_share(self) -> float:
        """Conv time (layout conversions included) as a fraction of the step time."""
        return self.share(self.conv_time_us)

    @property
    def conversion_time_us(self) -> float:
        """Layout conversions charged to the layers, per step."""
        return sum(layer.conversion_us for layer in self.layers) / self.profile.step_count

    @property
    def other_time_us(self) -> float:
        """Step time outside the conv layers, per step (not below zero: device time can outlast the host's step)."""
        return max(self.step_time_us - self.conv_time_us, 0.0)

    @property
    def mode(self) -> str:
        """``train`` or ``eval``: as recorded at capture time, else from backward work in the trace."""
        recorded = self.profile.environment.mode
        if recorded in ("train", "eval"):
            return recorded
        if any(layer.backward_us > 0 for layer in self.layers):
            return "train"
        cpu_op = EventKind.CPU_OP
        backward = any(op.kind is cpu_op and BACKWARD_OP.search(op.name) for op in self.profile.ops)
        return "train" if backward else "eval"

    def share(self, time_us: float) -> float:
        """``time_us`` (per step) as a fraction of the step time."""
        return time_us / self.step_time_us if self.step_time_us > 0 else 0.0

    @property
    def unprofiled_step_us(self) -> float | None:
        """The step timed without the profiler at capture (convdoctor's host-timed traces), else None."""
        recorded = self.profile.environment.unprofiled_step_us  # finite, or None
        number = isinstance(recorded, (int, float)) and not isinstance(recorded, bool)
        if self.time_basis is not TimeBasis.HOST or not number or recorded <= 0:
            return None
        return float(recorded)

    def saving_share(self, operator_us: float) -> float:
        """A predicted saving of ``operator_us`` of operator time per step, as a fraction of the step the harness
        times: over the step timed without the profiler at capture; ``share`` of the traced step where none is.

        The profiler's cost sits around the operators (module-scope hooks, annotations), not in them: on a 2-core
        CPU with glibc's heap kept, MobileNetV2's eval step took 113 ms traced and 94 ms unprofiled, while its
        conv operators took 74.6 ms per traced step and 74.4 ms timed alone without the profiler."""
        unprofiled = self.unprofiled_step_us
        if unprofiled is None or abs(operator_us) > unprofiled:  # traced times inflated beyond the step (a busy
            return self.share(operator_us)                        # machine at capture): a share of the traced step
        return operator_us / unprofiled


def conv_flops(input_shape: list[int], weight_shape: list[int], output_shape: list[int], transposed: bool) -> int:
    """Multiply-adds ×2 of a convolution: 2·N·K·(C/g)·R·S·P·Q (bias not counted, as FlopCounterMode does).

    A transposed conv scatters each input pixel through the whole kernel, so its spatial size is the input's.
    """
    spatial = input_shape[2:] if transposed else output_shape[2:]
    return 2 * input_shape[0] * math.prod(weight_shape) * math.prod(spatial)


def conv_output_shape(
    input_shape: list[int], weight_shape: list[int], stride: list[int], padding: list[int],
    dilation: list[int], groups: int, transposed: bool, output_padding: list[int] | None = None,
) -> list[int]:
    """The output shape PyTorch computes for a convolution with these arguments."""
    spatial_in = input_shape[2:]
    kernel = weight_shape[2:]
    out_pad = output_padding or [0] * len(spatial_in)
    if transposed:
        channels = weight_shape[1] * groups
        spatial = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1
                   for i, s, p, d, k, op in zip(spatial_in, stride, padding, dilation, kernel, out_pad)]
    else:
        channels = weight_shape[0]
        spatial = [(i + 2 * p - d * (k - 1) - 1) // s + 1
                   for i, s, p, d, k in zip(spatial_in, stride, padding, dilation, kernel)]
    return [input_shape[0], channels, *spatial]


def analyze_convs(profile: Profile) -> ConvAnalysis:
    """Attribute every convolution call in the profile to a layer and compute its metrics.

    A layer's time is its forward and backward device work (or host time on a CPU trace) plus the layout conversions
    charged to it; cuDNN's NCHW<->NHWC transpose kernels inside a conv call are conversions, counted once, not also
    in the forward or backward time.
    """
    basis = TimeBasis.DEVICE if profile.has_device_events else TimeBasis.HOST
    calls, backward_nodes, conversion_ops = _conv_events(profile)
    notes: list[str] = _trace_notes(profile)
    if not profile.steps and calls:
        notes.append(_infer_iterations(profile, calls))
    layer_of_call: dict[int, ConvLayer] = {}
    layers: dict[str, ConvLayer] = {}
    for op, name in _name_calls(profile, calls):
        layer = layers.get(name) or layers.setdefault(name, _new_layer(name, op))
        layer.calls += 1
        time_us, kernels, events = _call_work(op, basis)
        layer.forward_us += time_us
        layer.kernels.extend(kernels)
        for event in events:
            if event.kind is EventKind.CPU_OP and event.name not in DISPATCH_CONV_OPS and is_conv_op(event.name) \
                    and event.name not in layer.implementations:
                layer.implementations.append(event.name)
        layer_of_call[id(op)] = layer
    forward_by_sequence = {op.sequence_number: op for op in calls if op.sequence_number is not None}
    unnumbered: list[Op] = []  # backward nodes without a sequence number (traces of PyTorch 1.8 and before)
    matched: set[int] = set()
    pairs: list[tuple[Op, Op]] = []
    for node in backward_nodes:
        if node.sequence_number is None:
            unnumbered.append(node)
            continue
        forward = forward_by_sequence.get(node.sequence_number)
        if forward is not None and id(forward) in layer_of_call:
            pairs.append((node, forward))
            matched.add(id(forward))
    if unnumbered:
        by_shape = _match_backward(profile, unnumbered, [c for c in calls if id(c) not in matched])
        pairs += by_shape
        left = len(unnumbered) - len(by_shape)
        notes.append(f"{len(unnumbered)} conv backward node(s) carry no 'Sequence number' (PyTorch 1.8 and before): "
                     f"{len(by_shape)} matched to their forward calls by shapes, in reverse order"
                     + (f"; {left} not matched, their time is in no layer" if left else ""))
    for node, forward in pairs:
        layer = layer_of_call[id(forward)]
        time_us, kernels, events = _call_work(node, basis)
        layer.backward_us += time_us
        layer.kernels.extend(kernels)
        if layer.output_shape is None and _tensor_shape(node.input_dims, 0):
            layer.output_shape = _tensor_shape(node.input_dims, 0)  # grad_output has the forward output's shape
            _fill_metrics(layer)
        for event in events:
            layer_of_call.setdefault(id(event), layer)
    _charge_conversions(profile, calls, conversion_ops, layer_of_call)
    steps = profile.step_count
    for layer in layers.values():
        layer.calls_per_step = layer.calls / steps
        layer.time_per_step_us = (layer.forward_us + layer.backward_us + layer.conversion_us) / steps
    notes += _shape_notes(calls, layers)
    if calls and not profile.has_module_scopes:
        notes.append("the trace has no convdoctor module scopes: layers are named by their order in the step")
    ordered = sorted(layers.values(), key=lambda layer: layer.time_per_step_us, reverse=True)
    analysis = ConvAnalysis(profile=profile, layers=ordered, time_basis=basis,
                            step_time_us=profile.step_time_us, notes=notes, calls=calls, backward_nodes=backward_nodes)
    view = analysis.communication
    steps = view.steps if view is not None else []
    if any(s.allreduce_calls for s in steps) and not any(s.allreduce_bytes for s in steps):
        notes.append("DDP's gradient bucket sizes unknown: the trace's allreduce calls record no sizes (no "
                     "record_param_comms 'In msg nelems', empty 'Input Dims')")
    return analysis


def _conv_events(profile: Profile) -> tuple[list[Op], list[Op], list[Op]]:
    """The outermost conv operators, the conv backward nodes and the operators that may be host layout conversions,
    each in trace order: one pass over every event for the three (a pass takes about 0.04 s at 355k events)."""
    cpu_op = EventKind.CPU_OP
    calls: list[Op] = []
    backward_nodes: list[Op] = []
    conversion_ops: list[Op] = []
    for op in profile.ops:
        if op.kind is not cpu_op:
            continue
        name = op.name
        if name in CONVERSION_OPS:
            conversion_ops.append(op)
        if is_conv_op(name) and _outermost_conv(op):
            calls.append(op)
        if is_conv_backward_node(name):
            backward_nodes.append(op)
    return calls, backward_nodes, conversion_ops


def _outermost_conv(op: Op) -> bool:
    """No conv operator around this one: a conv operator so placed is the call as the model made it."""
    return not any(a.kind is EventKind.CPU_OP and is_conv_op(a.name) for a in op.ancestors())


def _name_calls(profile: Profile, calls: list[Op]) -> list[tuple[Op, str]]:
    """A stable layer name for each call: the module's qualified name, or its order in the step."""
    per_scope: dict[int, int] = defaultdict(int)
    unscoped: dict[Any, int] = defaultdict(int)
    named = []
    for op in calls:
        holder = op.module_call
        if holder is not None and holder.scope is not None:
            k = per_scope[id(holder)]
            per_scope[id(holder)] += 1
            qualified = holder.scope.qualified_name
            is_conv_module = CONV_MODULE_CLASS.search(holder.scope.class_name) is not None
            name = qualified if is_conv_module and k == 0 else f"{qualified}:{_short_op(op)}#{k}"
        else:
            step = profile.step_of(op.ts_us)
            key = step.number if step else None
            name = f"{_short_op(op)}#{unscoped[key]}"
            unscoped[key] += 1
        named.append((op, name))
    return named


def _conv_args(op: Op) -> dict[str, Any]:
    """Shapes and arguments of a conv call, read from the aten::convolution inside it where there is one."""
    source = next((o for o in (op, *op.descendants()) if o.name in ("aten::convolution", "aten::_convolution")), op)
    dims, values = source.input_dims, [_concrete(v) for v in source.concrete_inputs]
    positions = {"stride": 3, "padding": 4, "dilation": 5, "transposed": 6, "output_padding": 7, "groups": 8}
    if source.name.startswith("aten::conv_transpose"):
        positions = {"stride": 3, "padding": 4, "output_padding": 5, "groups": 6, "dilation": 7}
    elif source.name.startswith("aten::conv") and source.name[-2:] in ("1d", "2d", "3d"):
        positions = {"stride": 3, "padding": 4, "dilation": 5, "groups": 6}
    args = {key: values[i] if i < len(values) else None for key, i in positions.items()}
    for key, smallest in (("stride", 1), ("padding", 0), ("dilation", 1), ("output_padding", 0)):
        args[key] = _ints(args.get(key), smallest)  # a value of another form (or 0 stride) is unknown, as if absent
    args["groups"] = args["groups"] if _is_int(args["groups"], 1) else None
    args["transposed"] = bool(args.get("transposed")) or source.name.startswith("aten::conv_transpose")
    args["input_shape"] = _tensor_shape(dims, 0)
    args["weight_shape"] = _tensor_shape(dims, 1)
    args["bias_shape"] = _tensor_shape(dims, 2)
    args["input_strides"] = _tensor_shape(source.input_strides, 0)
    args["dtype"] = source.input_types[0] if source.input_types else ""
    return args


def _concrete(value: Any) -> Any:
    """A value from 'Concrete Inputs' ('[1, 1]', '1', 'False') as Python data, or None when not given."""
    if not isinstance(value, str) or value == "":
        return None
    try:
        return json.loads(value.replace("True", "true").replace("False", "false"))
    except json.JSONDecodeError:
        return None


def _is_int(value: Any, smallest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= smallest


def _ints(value: Any, smallest: int) -> list[int] | None:
    """A conv argument such as stride or padding: a list of ints, each at least ``smallest``; else None."""
    return value if isinstance(value, list) and all(_is_int(v, smallest) for v in value) else None


def _tensor_shape(shapes: list[Any], index: int) -> list[int]:
    """The sizes (or strides) of input ``index`` of an op, ``[]`` when it is not one tensor (absent, a list)."""
    entry = shapes[index] if index < len(shapes) else []
    return list(entry) if all(isinstance(v, int) for v in entry) else []


def _short_op(op: Op) -> str:
    args = _conv_args(op)
    rank = max(len(args["weight_shape"]) - 2, 0) or 2
    return f"conv_transpose{rank}d" if args["transposed"] else f"conv{rank}d"


def _new_layer(name: str, op: Op) -> ConvLayer:
    args = _conv_args(op)
    scope = op.module_call.scope if op.module_call is not None else None
    groups = args["groups"]
    if groups is None and not args["transposed"] and len(args["input_shape"]) > 1 and len(args["weight_shape"]) > 1:
        channels, per_group = args["input_shape"][1], args["weight_shape"][1]
        groups = channels // per_group if per_group and channels % per_group == 0 else None
    layer = ConvLayer(
        name=name,
        module_class=scope.class_name if scope else None,
        op=_short_op(op),
        input_shape=args["input_shape"],
        weight_shape=args["weight_shape"],
        output_shape=None,
        stride=args["stride"],
        padding=args["padding"],
        dilation=args["dilation"],
        groups=groups,
        transposed=args["transposed"],
        dtype=DTYPE_NAMES.get(args["dtype"], args["dtype"] or "unknown"),
        memory_format=memory_format(args["input_shape"], args["input_strides"]),
        bias_numel=math.prod(args["bias_shape"]) if args["bias_shape"] else 0,
        element_bytes=ELEMENT_BYTES.get(args["dtype"], 4),
    )
    known = all(isinstance(args[k], list) for k in ("stride", "padding", "dilation")) and groups
    if known and layer.input_shape and layer.weight_shape and isinstance(args["padding"], list):
        layer.output_shape = conv_output_shape(layer.input_shape, layer.weight_shape, args["stride"],
                                               args["padding"], args["dilation"], groups, layer.transposed,
                                               args.get("output_padding"))
    _fill_metrics(layer)
    return layer


def call_flops(op: Op) -> int | None:
    """The forward FLOPs of one conv call (as its layer's ``flops``), None where its shapes do not tell them."""
    return _new_layer("", op).flops


def _fill_metrics(layer: ConvLayer) -> None:
    if not (layer.output_shape and layer.input_shape and layer.weight_shape):
        return
    layer.flops = conv_flops(layer.input_shape, layer.weight_shape, layer.output_shape, layer.transposed)
    numel = math.prod(layer.input_shape) + math.prod(layer.weight_shape) + math.prod(layer.output_shape)
    layer.bytes = (numel + layer.bias_numel) * layer.element_bytes


def _call_work(op: Op, basis: TimeBasis) -> tuple[float, list[Kernel], list[Op]]:
    """A conv call's time (its device time, or its host duration on a CPU trace), the device events of it and of
    the events nested in it, and those events (it first, then ``descendants()``'s order).

    One walk for the three instead of one each (analyze_convs 0.27 -> 0.23 s at 10x). The device time leaves out
    cuDNN's NCHW<->NHWC transpose kernels: ``_charge_conversions`` charges them to the layer as conversions.
    """
    events = [op]
    kernels = list(op.kernels)
    stack = op.children[::-1]
    while stack:
        event = stack.pop()
        events.append(event)
        if event.kernels:
            kernels.extend(event.kernels)
        if event.children:
            stack.extend(reversed(event.children))
    if basis is TimeBasis.DEVICE:  # the transpose kernels are the layer's conversions: charged there, not here
        time_us = sum(k.dur_us for k in kernels if not is_transpose_kernel(k.name))
    else:
        time_us = op.dur_us
    return time_us, kernels, events


def _charge_conversions(profile: Profile, calls: list[Op], conversion_ops: list[Op],
                        layer_of_call: dict[int, ConvLayer]) -> None:
    """Charge each layout conversion to the conv it runs in, else the one it feeds, else the one it follows."""
    calls_by_thread: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in calls:
        calls_by_thread[(op.pid, op.tid)].append(op)
    for op in conversion_ops:
        conversion = _host_conversion(op)
        if conversion is None:
            continue
        layer = _owner(op, layer_of_call) or _neighbour(profile, op, calls_by_thread[(op.pid, op.tid)], layer_of_call)
        if layer is not None:
            layer.conversions.append(conversion)
    for kernel in profile.kernels:
        if kernel.launcher is None or not is_transpose_kernel(kernel.name):
            continue
        layer = _owner(kernel.launcher, layer_of_call)
        if layer is not None:
            to_nhwc = "nchwtonhwc" in kernel.name.lower() or "nchw2nhwc" in kernel.name.lower()
            layer.conversions.append(LayoutConversion(
                name=kernel.name, source="kernel", dur_us=kernel.dur_us,
                from_format=MemoryFormat.CONTIGUOUS if to_nhwc else MemoryFormat.CHANNELS_LAST,
                to_format=MemoryFormat.CHANNELS_LAST if to_nhwc else MemoryFormat.CONTIGUOUS,
                op_module=kernel.launcher.module.qualified_name if kernel.launcher.module else None))


def _host_conversion(op: Op) -> LayoutConversion | None:
    if op.kind is not EventKind.CPU_OP:
        return None
    if op.name in REORDER_OPS:
        shape = _tensor_shape(op.input_dims, 0)
        return LayoutConversion(op.name, "cpu_op", op.dur_us, MemoryFormat.OTHER, MemoryFormat.OTHER, shape,
                                op.module.qualified_name if op.module else None)
    if op.name != "aten::copy_" or len(op.input_dims) < 2 or len(op.input_strides) < 2:
        return None
    dst_shape, src_shape = _tensor_shape(op.input_dims, 0), _tensor_shape(op.input_dims, 1)
    if dst_shape != src_shape:
        return None
    dst = memory_format(dst_shape, _tensor_shape(op.input_strides, 0))
    src = memory_format(src_shape, _tensor_shape(op.input_strides, 1))
    known = {MemoryFormat.CONTIGUOUS, MemoryFormat.CHANNELS_LAST}
    if dst == src or dst not in known or src not in known:
        return None
    return LayoutConversion(op.name, "cpu_op", op.dur_us, src, dst, list(dst_shape),
                            op.module.qualified_name if op.module else None)


def _owner(op: Op, layer_of_call: dict[int, ConvLayer]) -> ConvLayer | None:
    for node in (op, *op.ancestors()):
        if id(node) in layer_of_call:
            return layer_of_call[id(node)]
    return None


def _neighbour(
    profile: Profile, op: Op, thread_calls: list[Op], layer_of_call: dict[int, ConvLayer]
) -> ConvLayer | None:
    step = profile.step_of(op.ts_us)
    same_step = [c for c in thread_calls if profile.step_of(c.ts_us) == step]
    following = next((c for c in same_step if c.ts_us >= op.end_us), None)
    chosen = following or next((c for c in reversed(same_step) if c.end_us <= op.ts_us), None)
    return layer_of_call.get(id(chosen)) if chosen is not None else None


def _trace_notes(profile: Profile) -> list[str]:
    """What the trace lacks for the whole analysis: PyTorch operators, kernel records, steps."""
    notes = []
    if profile.cpu_op_count == 0:
        notes.append("the trace holds no PyTorch operator events (cpu_op): it is not a PyTorch profiler trace, or "
                     "the profiler recorded no operators; there are no conv layers, steps or operators to read")
    unread = {category: count for category, count in profile.unknown_categories.items() if count}
    if unread:
        listed = ", ".join(f"{category} ({count})" for category, count in sorted(unread.items(), key=lambda i: -i[1]))
        notes.append(f"the trace holds events of categories convdoctor does not read: {listed}; their time is in no "
                     "figure of this report")
    if not profile.kernels and profile.kernel_launches:
        notes.append(f"the trace records {profile.kernel_launches} CUDA kernel launches but no kernel records "
                     "(CUPTI range profiling, or CUDA activities not traced): GPU time, GPU idle and conv kernels "
                     "are unknown; times are the host operators' durations, not GPU time")
    return notes


def _shape_notes(calls: list[Op], layers: dict[str, ConvLayer]) -> list[str]:
    """What the conv calls' arguments do not tell: shapes (hence FLOPs, bytes), dtype, layout."""
    if not calls:
        return []
    if not any(_tensor_shape(op.input_dims, 1) for op in calls):
        return ["the trace has no conv input shapes (recorded without record_shapes=True): conv shapes, FLOPs, "
                "bytes, intensity and memory formats are unknown"]
    notes = []
    missing = [layer.name for layer in layers.values() if layer.flops is None]
    if missing:
        notes.append(f"FLOPs and intensity unknown for {len(missing)} layer(s): the trace lacks stride/padding "
                     "(no 'Concrete Inputs', recorded before PyTorch 1.13 or without record_shapes) and no "
                     "backward gives their output shape")
    if all(layer.memory_format is MemoryFormat.UNKNOWN for layer in layers.values()):
        notes.append("memory formats unknown: the trace has no 'Input Strides' (recorded before PyTorch 2.0)")
    if all(layer.dtype == "unknown" for layer in layers.values()):
        notes.append("conv dtypes unknown: the trace's 'Input type' lists are empty (an old PyTorch); bytes assume "
                     "4-byte elements")
    return notes


def _infer_iterations(profile: Profile, calls: list[Op]) -> str:
    """Find the iterations of a trace that marks no ``ProfilerStep``: the smallest period over which its sequence of
    conv calls repeats (each call's op, input and weight shapes, and the names of the operators run since the call
    before it; but for the second iteration's first call, whose operators before it are the first iteration's
    tail and the trace's start, not two tails). When there is one, of at least two iterations, the profile's
    steps become those iterations (each from its first conv call's start to the next one's; the last to the trace's
    end). Returns the note that says what was done."""
    signatures, gaps = _call_signatures(profile, calls)
    count = len(calls)
    period = next((p for p in range(1, count // 2 + 1) if count % p == 0
                   and all(signatures[i] == signatures[i - p] and (i == p or gaps[i] == gaps[i - p])
                           for i in range(p, count))), None)
    if period is None:
        return (f"the trace marks no ProfilerStep and its {count} conv calls do not repeat: the whole traced span is "
                "one step, and each conv call is its own layer")
    span = profile.traced_span
    end = span[1] if span is not None else calls[-1].end_us
    starts = [calls[i].ts_us for i in range(0, count, period)]
    ends = starts[1:] + [end]
    profile.steps = [Step(number=n, ts_us=start, dur_us=stop - start, inferred=True)
                     for n, (start, stop) in enumerate(zip(starts, ends))]
    profile.__dict__.pop("_step_index", None)  # step_of reads the new steps
    return (f"the trace marks no ProfilerStep: its {count} conv calls repeat every {period}, read as "
            f"{len(starts)} iterations (a step runs from an iteration's first conv call to the next one's, the last "
            "to the trace's end)")


def _call_signatures(profile: Profile, calls: list[Op]) -> tuple[list[Any], list[tuple[str, ...]]]:
    """Per conv call: its op with its input and weight shapes; and the names of the outermost CPU operators its
    thread ran between the conv call before it on that thread and it."""
    outermost: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in profile.outermost_cpu_ops:
        outermost[(op.pid, op.tid)].append(op)
    starts = {thread: [op.ts_us for op in ops] for thread, ops in outermost.items()}
    previous_end: dict[tuple[str, str], float] = {}
    signatures, gaps = [], []
    for op in calls:
        thread = (op.pid, op.tid)
        signatures.append((op.name, tuple(map(tuple, op.input_dims[:2])) if op.input_dims else ()))
        ops, times = outermost.get(thread, []), starts.get(thread, [])
        first = bisect.bisect_left(times, previous_end.get(thread, -math.inf))
        last = bisect.bisect_left(times, op.ts_us)
        gaps.append(tuple(o.name for o in ops[first:last]))
        previous_end[thread] = op.end_us
    return signatures, gaps


def _match_backward(profile: Profile, nodes: list[Op], calls: list[Op]) -> list[tuple[Op, Op]]:
    """Pair conv backward nodes that carry no sequence number with forward calls: each node, in time order, with
    the latest forward call before it in the same step that is not paired yet and has its input and weight shapes
    (any such call, where the trace has no shapes). The backward runs the layers in reverse order, so the latest
    unpaired forward of those shapes is the node's."""
    step_of_call = [profile.step_of(c.ts_us) for c in calls]
    forward_shapes = [_forward_shapes(c) for c in calls]
    open_calls = list(range(len(calls)))  # indices of unpaired calls, in time order
    pairs = []
    for node in sorted(nodes, key=lambda n: n.ts_us):
        step = profile.step_of(node.ts_us)
        shapes = _backward_shapes(node)
        for position in range(len(open_calls) - 1, -1, -1):
            index = open_calls[position]
            call = calls[index]
            if call.ts_us > node.ts_us or step_of_call[index] is not step:
                continue
            if shapes is None or (forward_shapes[index][1] == shapes[1] and forward_shapes[index][0] in shapes[0]):
                pairs.append((node, call))
                del open_calls[position]
                break
    return pairs


def _backward_shapes(node: Op) -> tuple[list[list[int]], list[int]] | None:
    """The shapes a conv backward's aten operator was called with: (its first two tensors, one of which is the
    forward's input and the other grad_output, in an order that differs between backends; the weight); None
    where the trace has no shapes."""
    inner = next((o for o in node.descendants() if CONV_BACKWARD_OP.search(o.name)), node)
    dims = inner.input_dims
    weight = _tensor_shape(dims, 2)
    if not weight:
        return None
    return [_tensor_shape(dims, 0), _tensor_shape(dims, 1)], weight


def _forward_shapes(call: Op) -> tuple[list[int], list[int]]:
    """A conv call's input and weight shapes."""
    args = _conv_args(call)
    return args["input_shape"], args["weight_shape"]
