"""CD119 cpu-bf16: fp32 convolutions on a CPU that computes bfloat16 natively (AVX512-BF16, AMX-BF16, Arm BF16)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import autocast_to
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity
from convdoctor.rules.shared.cpu_precision import CpuBf16

# Max relative output error (max |diff| / max |baseline|) the candidate may cause. bfloat16 keeps 8 significant bits
# (unit roundoff 2^-9 ≈ 2e-3); rounding each conv's input and weight, with float32 accumulation, gave 4e-3 on
# examples/small_cnn.py (15 convs, eval and train) and on tests/models/cd113_bias_bn.py: 2e-2 leaves room for deeper
# networks, and is CD103's tolerance for the same autocast on a GPU.
TOLERANCE = 2e-2

EVAL_SNIPPET = """\
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    out = model(x)  # convs, linears and matmuls in bfloat16; outputs are bfloat16: .float() them where needed"""

TRAIN_SNIPPET = """\
for x, y in loader:
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 has float32's range: no GradScaler
        loss = criterion(model(x), y)
    loss.backward()  # weights and their gradients stay float32
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)"""


@dataclass(frozen=True)
class CpuBf16Evidence:
    """The fp32 conv layers of a CPU trace and the recorded fact that says the CPU computes bfloat16 natively."""

    fp32_layers: int
    conv_layers: int
    fp32_conv_ms_per_step: float
    fp32_conv_share: float  # of the step
    cpu: str  # the CPU's model name, as capture recorded it
    cpu_capability: str | None  # torch.backends.cpu.get_cpu_capability() at capture
    mkldnn_bf16_supported: bool | None
    cpu_low_precision_flags: str | None  # the low-precision /proc/cpuinfo flags recorded at capture
    decided_by: str  # the fact that decided: "/proc/cpuinfo flag amx_bf16", ...
    training: bool
    tolerance: float

    def message(self) -> str:
        return (f"{self.fp32_layers} of {self.conv_layers} conv layers run in float32: "
                f"{self.fp32_conv_ms_per_step:.1f} ms, {self.fp32_conv_share:.0%} of the step, on {self.cpu}, which "
                f"computes bfloat16 natively ({self.decided_by})")


class CpuBf16Rule:
    """fp32 convolutions on a CPU with native bfloat16 that take a meaningful share of the step."""

    id = "CD119"
    name = "cpu-bf16"
    summary = "fp32 convolutions on a CPU with native bfloat16 (AVX512-BF16/AMX): autocast to bfloat16"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_share = 0.1  # Options: smallest share of step time in fp32 conv layers that is reported
    doc = """\
## What it detects
A CPU trace whose float32 convolutions take at least `min_share` of the step, captured on a CPU that computes
bfloat16 natively: /proc/cpuinfo lists `amx_bf16` (Intel Sapphire Rapids and later), `avx512_bf16` (Cooper Lake,
AMD Zen 4 and later) or `bf16` (Arm Neoverse V1/N2, Graviton3), and torch's
`torch.ops.mkldnn._is_mkldnn_bf16_supported()` is true. Capture records these facts in the trace, so `analyze` of
the trace on another machine decides as `profile` did; the finding names the fact that decided. Eval and train.

The rule stays quiet on a CPU without native bfloat16 (AVX2 only, or AVX-512 without BF16): there torch sends
bfloat16 convolutions to ATen's reference `thnn_conv2d` (or oneDNN emulates bfloat16 with float32 arithmetic),
which is 4-16x slower than float32 on AVX2-only CPUs (pytorch/pytorch#183815; 99x for one small Conv2d on
one thread of an AVX2 EPYC here). It stays quiet too on a trace that does not record the facts.

## Why it is slow
With AVX512-BF16 a core does a bfloat16 dot product (`vdpbf16ps`) at twice the float32 FMA rate, and AMX tiles
at 8-16x; oneDNN picks bfloat16 kernels (brgconv) for convolutions whose inputs are bfloat16. Half-width
activations also halve the memory traffic of every conv, batch norm and activation around them. In float32
none of that is used. On this kind of CPU bfloat16 autocast with channels_last measured 1.6-2.4x on eval CNNs
at batch 8, where float32 fixes alone gave 1.2-1.7x.

## Example
```python
model = torchvision.models.resnet18().eval()
with torch.inference_mode():
    out = model(x)  # float32 convs on a CPU with AMX-BF16
```

## Use instead
```python
model = model.to(memory_format=torch.channels_last)
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    out = model(x.to(memory_format=torch.channels_last))
```
This is a precision change: bfloat16 keeps 8 significant bits (float32 keeps 24) and float32's range. Autocast
keeps reductions, softmax and losses in float32 and the weights in float32; in training no GradScaler is needed.
Check the model's accuracy on real data before adopting it; the candidate reports the output error.

## Evidence
The dtype of each conv layer (`Input type` of the conv operator) and its host time per step; from the trace's
convdoctor environment: `mkldnn_bf16_supported`, `cpu_low_precision_flags` (the low-precision flags of
/proc/cpuinfo), `cpu_capability`, `device_name`.

## Options
`min_share` (fraction of step time, default 0.1): smallest share of the step spent in float32 conv layers for the
finding to be reported. The candidate's tolerance is 2e-2 (max absolute output error over the largest baseline
output magnitude): bfloat16 rounding gave 4e-3 on a 15-conv ResNet-like network.

## References
- https://pytorch.org/docs/stable/amp.html#cpu-op-specific-behavior
- https://www.intel.com/content/www/us/en/developer/articles/technical/pytorch-on-xeon-processors-with-bfloat16.html
- https://oneapi-src.github.io/oneDNN/dev_guide_data_types.html
- https://github.com/pytorch/pytorch/issues/183815
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        environment = profile.environment
        if profile.has_device_events or not (environment.device or "cpu").startswith("cpu"):
            return  # a GPU run: CD103's
        support = CpuBf16.from_environment(environment)
        fp32 = [layer for layer in analysis.layers if layer.dtype == "float32"]
        if not fp32 or support.native is not True:
            return
        fp32_us = sum(layer.time_per_step_us for layer in fp32)
        share = analysis.share(fp32_us)
        if share < self.min_share:
            return
        training = analysis.mode == "train"
        evidence = CpuBf16Evidence(
            fp32_layers=len(fp32), conv_layers=len(analysis.layers), fp32_conv_ms_per_step=fp32_us / 1e3,
            fp32_conv_share=share, cpu=environment.device_name or "this CPU",
            cpu_capability=support.cpu_capability, mkldnn_bf16_supported=support.mkldnn_bf16_supported,
            cpu_low_precision_flags=support.cpu_low_precision_flags, decided_by=support.decided_by,
            training=training, tolerance=TOLERANCE)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= 0.2 else Severity.INFO,
            evidence=evidence,
            fix="Run the model under torch.autocast(\"cpu\", dtype=torch.bfloat16)",
            advice=("This is a precision change: bfloat16 keeps 8 significant bits where float32 keeps 24 (the "
                    "candidate reports the output error against float32; check accuracy on real data). Wrap the "
                    "forward pass (and the loss) in torch.autocast(\"cpu\", dtype=torch.bfloat16): oneDNN then runs "
                    "the convolutions with bfloat16 kernels, and autocast keeps reductions, softmax and losses in "
                    "float32 and the weights in float32. Combine it with channels_last."
                    + (" In training bfloat16 needs no GradScaler." if training else "")),
            snippet=TRAIN_SNIPPET if training else EVAL_SNIPPET,
            layers=[layer.name for layer in fp32],
            estimated_saving=None,  # the bfloat16 kernels' speed is not in the trace: the candidate measures it
            candidate=Candidate(
                title="autocast to bfloat16 on the CPU",
                transform=autocast_to("bfloat16"),
                numerics=NumericsContract.APPROXIMATE,
                tolerance=TOLERANCE,
                stage=PlanStage.WRAPPER,  # wraps the whole model: after any module or layout change
            ),
        )
