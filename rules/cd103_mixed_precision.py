"""CD103 mixed-precision: fp32 convolutions on a GPU whose tensor cores run fp16/bf16 convolutions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import autocast, backend_flags
from convdoctor.analyzer.conv.conv_device import conv_device, device_properties
from convdoctor.analyzer.conv.layers import (
    ConvAnalysis,
)
from convdoctor.rules.base import Finding, Requirement, Severity

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    import torch

    from convdoctor.analyzer.capture.workload import Workload

TOLERANCE = 2e-2  # max relative error of outputs (max |diff| / max |baseline|) that autocast may cause
TF32_TOLERANCE = 1e-2  # TF32 keeps fp32's range with a 10-bit mantissa, like float16's
TF32_SNIPPET = """\
torch.backends.cuda.matmul.allow_tf32 = True  # Linear layers and matmuls (off by default)
torch.backends.cudnn.allow_tf32 = True        # convolutions (on by default)"""

TRAIN_SNIPPET = """\
scaler = torch.amp.GradScaler("cuda")  # float16 needs loss scaling; with bfloat16 drop the scaler
for x, y in loader:
    with torch.autocast(device_type="cuda", dtype=torch.{dtype}):
        loss = criterion(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)"""

EVAL_SNIPPET = """\
with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.{dtype}):
    out = model(x)"""


def mixed_precision_dtype(device: torch.device, trace_major: int | None = None) -> torch.dtype:
    """The autocast dtype for ``device``: bfloat16 from compute capability 8 (Ampere) on, float16 before it.

    The capability is read from the device the workload runs on, falling back to the one the trace recorded.
    CPU autocast computes in bfloat16.
    """
    import torch

    if device.type != "cuda":
        return torch.bfloat16
    try:
        major = torch.cuda.get_device_capability(device)[0]
    except (AssertionError, RuntimeError):  # no usable CUDA here: trust the trace
        major = trace_major
    return torch.bfloat16 if major is not None and major >= 8 else torch.float16


def autocast_for_device(trace_major: int | None) -> Callable[[Workload], Workload]:
    """A transform that runs the workload under autocast to the dtype its own device supports best."""

    def transform(workload: Workload) -> Workload:
        return autocast(mixed_precision_dtype(workload.device, trace_major))(workload)

    return transform


@dataclass(frozen=True)
class MixedPrecisionEvidence:
    """fp32 conv layers on a GPU with tensor cores (compute capability 7.0 or newer), and the dtype to try."""

    fp32_layers: int
    conv_layers: int
    fp32_conv_ms_per_step: float
    fp32_conv_share: float
    device: int
    device_name: str
    compute_capability: str  # "major.minor"
    suggested_dtype: str  # bfloat16 from sm_80, else float16
    training: bool
    cudnn_allow_tf32: bool | None  # as recorded at capture
    tolerance: float

    def message(self) -> str:
        capability = self.compute_capability.replace(".", "")
        cores = "bfloat16 and float16" if self.suggested_dtype == "bfloat16" else "float16"
        return (f"{self.fp32_layers} of {self.conv_layers} conv layers run in float32: "
                f"{self.fp32_conv_ms_per_step:.1f} ms, {self.fp32_conv_share:.0%} of the step, on {self.device_name} "
                f"(sm_{capability}), whose tensor cores run {cores}")


@dataclass(frozen=True)
class TF32Evidence:
    """fp32 convs on sm_80 or newer with a TF32 switch not known to be on (None: not recorded)."""

    cudnn_allow_tf32: Any
    matmul_allow_tf32: Any
    compute_capability: str
    device_name: str
    fp32_conv_share: float
    tolerance: float

    def message(self) -> str:
        flags = {"cudnn_allow_tf32": self.cudnn_allow_tf32, "matmul_allow_tf32": self.matmul_allow_tf32}
        state = ", ".join(f"{name}={'unknown' if value is None else value}" for name, value in flags.items())
        return (f"fp32 on {self.device_name} (sm_{self.compute_capability.replace('.', '')}) with {state}: TF32 "
                f"tensor cores are the smaller step ({self.fp32_conv_share:.0%} of the step in fp32 convs)")


class MixedPrecisionRule:
    """fp32 convolutions on a tensor-core GPU (compute capability 7.0+) that take a meaningful share of the step."""

    id = "CD103"
    name = "mixed-precision"
    summary = "fp32 convolutions on a GPU with tensor cores: autocast to float16/bfloat16"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.DEVICE_KERNELS})
    min_share = 0.1  # Options: smallest share of step time in fp32 conv layers that is reported
    doc = """\
## What it detects
Convolutions whose inputs are float32 on an NVIDIA GPU with tensor cores: compute capability 7.0 or
newer (Volta, Turing: float16) or 8.0 or newer (Ampere, Hopper: float16 and bfloat16), where the fp32 conv
layers take at least `min_share` of the step. The device is the one the conv kernels ran on, read from the
trace's `deviceProperties`.

## Why it is slow
Tensor cores multiply float16/bfloat16 matrices at 8-16x the fp32 rate, and half-width activations halve
the memory traffic of every conv, batch norm and activation around it. In fp32 a Volta or Turing GPU runs
convolutions on its CUDA cores only; Ampere and newer use TF32 tensor cores for cuDNN convolutions by default,
which is still about half the float16/bfloat16 rate with twice the bytes.

## Example
```python
model = torchvision.models.resnet50().cuda()
loss = criterion(model(x), y)           # every conv runs in float32
loss.backward()
```

## Use instead
```python
scaler = torch.amp.GradScaler("cuda")    # float16 only; bfloat16 (Ampere+) needs no loss scaling
with torch.autocast(device_type="cuda", dtype=torch.float16):
    loss = criterion(model(x), y)
scaler.scale(loss).backward()
scaler.step(optimizer)
scaler.update()
```
When autocast is not acceptable, TF32 on Ampere and newer is the smaller step: `torch.backends.cudnn.allow_tf32
= True` (the default for convolutions) and `torch.backends.cuda.matmul.allow_tf32 = True`. On sm_80+ with either
switch off or not recorded, a second, info finding proposes exactly that as its own candidate (tolerance 1e-2),
measured apart from autocast.

## Evidence
The dtype of each conv layer (`Input type` of the conv operator), the layers' device time per step, the
device the conv kernels ran on (kernel `device`) and its `computeMajor`/`computeMinor` and name from
`deviceProperties`; the TF32 settings convdoctor recorded at capture, where the trace has them.

## Options
`min_share` (fraction of step time, default 0.1): smallest share of the step spent in fp32 conv layers for
the finding to be reported. The candidate's tolerance is 2e-2 (max absolute output error over the largest
baseline output magnitude).

## References
- https://pytorch.org/docs/stable/amp.html
- https://pytorch.org/tutorials/recipes/recipes/amp_recipe.html
- https://docs.nvidia.com/deeplearning/performance/mixed-precision-training/index.html
- https://pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        fp32 = [layer for layer in analysis.layers if layer.dtype == "float32"]
        device = conv_device(profile)
        props = device_properties(profile, device)
        if not fp32 or props is None:
            return
        major, minor = props.get("computeMajor"), props.get("computeMinor")
        if not isinstance(major, int) or major < 7:
            return  # no tensor cores: Pascal and older gain little from autocast
        fp32_us = sum(layer.time_per_step_us for layer in fp32)
        share = analysis.share(fp32_us)
        if share < self.min_share:
            return
        dtype = "bfloat16" if major >= 8 else "float16"
        training = any(layer.backward_us > 0 for layer in fp32)
        device_name = str(props.get("name", f"cuda:{device}"))
        capability = f"{major}.{minor if isinstance(minor, int) else 0}"
        tf32 = profile.environment.cudnn_allow_tf32
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= 0.2 else Severity.INFO,
            fix=f"Run the model under torch.autocast({dtype})",
            advice=self._advice(major, dtype, training, tf32),
            snippet=(TRAIN_SNIPPET if training else EVAL_SNIPPET).format(dtype=dtype),
            layers=[layer.name for layer in fp32],
            evidence=MixedPrecisionEvidence(
                fp32_layers=len(fp32),
                conv_layers=len(analysis.layers),
                fp32_conv_ms_per_step=fp32_us / 1e3,
                fp32_conv_share=share,
                device=device,
                device_name=device_name,
                compute_capability=capability,
                suggested_dtype=dtype,
                training=training,
                cudnn_allow_tf32=tf32,
                tolerance=TOLERANCE,
            ),
            estimated_saving=None,  # the tensor-core speedup is not in the trace: the candidate measures it
            candidate=Candidate(
                title=f"autocast to {dtype} (picked from the device at run time)",
                transform=autocast_for_device(major),
                numerics=NumericsContract.APPROXIMATE,
                tolerance=TOLERANCE,
                stage=PlanStage.WRAPPER,  # it wraps the whole model: after any module or layout change
            ),
        )
        if major >= 8:
            tf32 = self.tf32_finding(analysis, [layer.name for layer in fp32], share, device_name, capability)
            if tf32 is not None:
                yield tf32

    def tf32_finding(self, analysis: ConvAnalysis, fp32_layers: list[str], share: float, device_name: str,
                     capability: str) -> Finding | None:
        """On Ampere or newer (sm_80+), fp32 with a TF32 switch not known to be on: TF32 as its own candidate."""
        env = analysis.profile.environment
        cudnn, matmul = env.cudnn_allow_tf32, env.matmul_allow_tf32
        if cudnn is True and matmul is True:
            return None
        return Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=Severity.INFO,
            fix="Allow TF32 for convolutions and matmuls",
            advice=("On Ampere and newer, TF32 runs fp32 convolutions and matmuls on tensor cores with fp32's range "
                    "and a 10-bit mantissa, with no change to the model or its dtypes: a smaller step than autocast."
                    " cuDNN convolutions use it by default; matmuls (Linear) do not."),
            snippet=TF32_SNIPPET,
            layers=fp32_layers,
            evidence=TF32Evidence(cudnn_allow_tf32=cudnn, matmul_allow_tf32=matmul, compute_capability=capability,
                                  device_name=device_name, fp32_conv_share=share, tolerance=TF32_TOLERANCE),
            candidate=Candidate(
                title="TF32 allowed for convolutions and matmuls",
                transform=backend_flags(cudnn_allow_tf32=True, matmul_allow_tf32=True),
                numerics=NumericsContract.APPROXIMATE,
                tolerance=TF32_TOLERANCE,
                stage=PlanStage.WRAPPER,
            ),
        )

    def _advice(self, major: int, dtype: str, training: bool, tf32: Any) -> str:
        advice = (f"Wrap the forward pass and the loss in torch.autocast(device_type=\"cuda\", dtype=torch.{dtype}); "
                  "autocast keeps numerically sensitive ops (reductions, softmax, losses) in float32 and leaves "
                  "the weights in float32.")
        if training:
            advice += (" In training, scale the loss with torch.amp.GradScaler when using float16, so that small "
                       "gradients do not underflow; bfloat16 has float32's range and needs no scaler.")
        if major >= 8:
            if tf32 is False:
                advice += (" This run had TF32 turned off (torch.backends.cudnn.allow_tf32 = False): turning it "
                           "back on is the smaller step when autocast is not acceptable.")
            else:
                advice += (" If autocast is not acceptable, TF32 is the smaller step: keep "
                           "torch.backends.cudnn.allow_tf32 = True (the default) and set "
                           "torch.backends.cuda.matmul.allow_tf32 = True.")
        else:
            advice += " This GPU predates TF32 (Ampere): float16 autocast is the way to its tensor cores."
        return advice
