"""Communication in one rank's trace: how long collectives ran in each step, and how much of that overlapped compute.

Definitions (the report states them):
- communication: the union of the intervals of collective work: ``gloo:*`` / ``nccl:*`` annotations that c10d
  records on its worker threads (CPU), or NCCL kernels (GPU);
- compute: the union of the intervals of the other operators (CPU: operators on threads that run no collective,
  without the ``c10d::*`` calls that only enqueue one; GPU: the other kernels, memcpy and memset left out, as
  HTA counts them);
- overlap: communication time during which compute also ran; exposed communication is the rest, the time a rank
  did nothing but communicate (or wait for a slower rank in a collective).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from convdoctor.analyzer.conv.intervals import intersection, length, merged
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile

COLLECTIVE_ANNOTATION = re.compile(r"^(gloo|nccl|mpi|ucc):")
ENQUEUE_OP = re.compile(r"^(c10d::|record_param_comms$)")
NCCL_KERNEL = re.compile(r"nccl", re.IGNORECASE)
ALLREDUCE = re.compile(r"all_?reduce", re.IGNORECASE)
BACKWARD = re.compile(r"Backward|^autograd::engine")  # an autograd node (as layers.BACKWARD_OP)
BUCKET_COPY_OP = re.compile(r"reducer::(copy_bucket_to_grad|mul_out)")  # DDP copying gradients out of buckets

DEFINITIONS = {
    "communication": "union of the collective intervals: gloo:*/nccl:* annotations on c10d's threads (CPU) or "
                     "NCCL kernels (GPU)",
    "compute": "union of the other operators (CPU: on threads that run no collective, without the c10d:: calls "
               "that only enqueue one) or kernels (GPU; memcpy and memset are not compute)",
    "bucket": "a gradient allreduce DDP enqueues from the backward (a c10d allreduce inside an autograd node); its "
              "size is record_param_comms' 'In msg nelems' x its dtype, else its input's Input Dims (x 4 bytes)",
    "overlap": "communication time during which compute also ran; exposed communication is the rest",
    "work": "a rank's step less its exposed communication: its own compute, Python and data loading",
    "straggler": "the rank with the most work in every profiled step, by more than 5% of a step and 1 ms in each",
}


@dataclass(frozen=True)
class CommStep:
    """One profiled step of one rank, in µs."""

    number: int | None  # None: the whole trace, which marks no steps
    step_us: float
    comm_us: float
    overlap_us: float
    compute_us: float
    allreduce_calls: int  # DDP issues one allreduce per gradient bucket: the allreduces enqueued from the backward
    allreduce_elements: int  # gradient elements those allreduces carried (0: the trace does not say)
    bucket_copy_us: float  # DDP copying gradients between buckets and .grad
    allreduce_bytes: int = 0  # their bytes (elements x dtype size; 4 bytes an element where the dtype is unknown)
    nccl_kernel_us: float = 0.0  # summed durations of the NCCL kernels that start in the step (device basis)

    @property
    def exposed_comm_us(self) -> float:
        return self.comm_us - self.overlap_us

    @property
    def work_us(self) -> float:
        """The step less its exposed communication: what the rank spent on its own (compute, Python, data)."""
        return self.step_us - self.exposed_comm_us


@dataclass(frozen=True)
class CommView:
    """Communication of one rank over its profiled steps."""

    steps: list[CommStep]
    time_basis: str  # "host" (CPU traces) or "device" (NCCL kernels)

    def mean(self, field: str) -> float:
        return sum(getattr(s, field) for s in self.steps) / len(self.steps)

    @property
    def comm_share(self) -> float:
        step = self.mean("step_us")
        return self.mean("comm_us") / step if step > 0 else 0.0

    @property
    def overlap_fraction(self) -> float:
        """Of the communication time, the fraction that overlapped compute."""
        comm = self.mean("comm_us")
        return self.mean("overlap_us") / comm if comm > 0 else 0.0


# Name checks remembered per name: a trace repeats a few hundred names over hundreds of thousands of events.
@functools.cache
def _is_nccl_kernel(name: str) -> bool:
    return NCCL_KERNEL.search(name) is not None


@functools.cache
def _is_enqueue_op(name: str) -> bool:
    return ENQUEUE_OP.match(name) is not None


@functools.cache
def _is_bucket_copy(name: str) -> bool:
    return BUCKET_COPY_OP.search(name) is not None


def communication(profile: Profile) -> CommView | None:
    """The communication view of a rank's trace, per step (the whole traced span where it marks none); None when the
    trace holds no collective."""
    cpu_op = EventKind.CPU_OP
    nccl = []
    if any(map(_is_nccl_kernel, {k.name for k in profile.kernels})):  # each distinct name once
        nccl = [k for k in profile.kernels if _is_nccl_kernel(k.name)]
        comm = [(k.ts_us, k.end_us) for k in nccl]
        kernel = EventKind.KERNEL  # memcpy and memset are not compute (HTA's overlap counts kernels only)
        compute = [(k.ts_us, k.end_us) for k in profile.kernels if k.kind is kernel and not _is_nccl_kernel(k.name)]
        basis = "device"
    else:
        annotation = EventKind.ANNOTATION
        collectives = [op for op in profile.ops if op.kind is annotation and COLLECTIVE_ANNOTATION.match(op.name)]
        if not collectives:
            return None  # before reading every operator for the compute time
        comm_threads = {(op.pid, op.tid) for op in collectives}
        comm = [(op.ts_us, op.end_us) for op in collectives]
        compute = [(op.ts_us, op.end_us) for op in profile.ops if op.kind is cpu_op
                   and (op.pid, op.tid) not in comm_threads and not _is_enqueue_op(op.name)]
        basis = "host"
    spans = profile.step_spans  # without steps, the whole traced span is one step (as the GPU timeline's)
    if not comm or not spans:
        return None
    calls = _bucket_calls(profile)
    sizes = {id(op): _message(op) for op in calls}
    comm_union, compute_union = merged(comm), merged(compute)
    overlap = intersection(comm_union, compute_union)
    copies = merged([(op.ts_us, op.end_us) for op in profile.ops if _is_bucket_copy(op.name)])
    steps = []
    for number, start, end in spans:
        span = [(start, end)]
        in_step = [op for op in calls if start <= op.ts_us < end]
        steps.append(CommStep(
            number=number,
            step_us=end - start,
            comm_us=length(intersection(comm_union, span)),
            overlap_us=length(intersection(overlap, span)),
            compute_us=length(intersection(compute_union, span)),
            allreduce_calls=len(in_step),
            allreduce_elements=sum(sizes[id(op)][0] for op in in_step),
            bucket_copy_us=length(intersection(copies, span)),
            allreduce_bytes=sum(sizes[id(op)][1] for op in in_step),
            nccl_kernel_us=sum(k.dur_us for k in nccl if start <= k.ts_us < end),
        ))
    return CommView(steps=steps, time_basis=basis)


DTYPE_BYTES = {"Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
               "Byte": 1, "Bool": 1, "Float8_e4m3fn": 1, "Float8_e5m2": 1}
TYPE_BYTES = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8, "int": 4}


def _bucket_calls(profile: Profile) -> list[Op]:
    """The c10d allreduce calls that carry DDP's gradient buckets, in trace order: those enqueued from the backward
    (inside an autograd node), or every allreduce when none is (a trace whose backward is not recorded)."""
    cpu_op = EventKind.CPU_OP
    calls = [op for op in profile.ops if op.kind is cpu_op and op.name.startswith("c10d::")
             and ALLREDUCE.search(op.name)]  # the enqueueing calls, whatever the backend
    in_backward = [op for op in calls if any(BACKWARD.search(a.name) for a in op.ancestors())]
    return in_backward or calls


def _message(op: Op) -> tuple[int, int]:
    """The elements and bytes an allreduce call carries: c10d's record_param_comms inside it says them (PyTorch
    2.x); else its first input's Input Dims, at its Input type's size (4 bytes where the type is not given)."""
    # record_param_comms runs inside the c10d call (or, in some versions, around it)
    record = next((o for o in (op, *op.descendants(), *op.ancestors()) if o.message_elements is not None), None)
    if record is not None:
        return record.message_elements, record.message_elements * DTYPE_BYTES.get(record.message_dtype or "", 4)
    elements = _elements(op.input_dims)
    first_type = op.input_types[0] if op.input_types else ""
    return elements, elements * TYPE_BYTES.get(first_type, 4)


def _elements(input_dims: list) -> int:
    """Elements of a collective's first input (a tensor, or a list of tensors)."""
    first = input_dims[0] if input_dims else []
    shapes = first if first and isinstance(first[0], list) else [first]
    total = 0
    for shape in shapes:
        count = 1
        for dim in shape:
            count *= dim
        total += count if shape else 0
    return total
