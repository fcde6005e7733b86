"""A device's roofs (peak FLOP/s and memory bandwidth) for the roofline: NVIDIA's datasheets by device name, or the
CPU peaks convdoctor measured at capture and recorded in the trace. No torch: ``capture.hardware`` measures."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from convdoctor.analyzer.trace.environment import RecordedEnvironment

TERA, GIGA = 1e12, 1e9


class PeaksSource(str, enum.Enum):
    """Where a device's peaks come from."""

    MEASURED = "measured"  # on this machine, at capture time (CPU)
    DATASHEET = "datasheet"  # NVIDIA's published numbers (GPU)
    UNKNOWN = "unknown"  # no roofline: the device or dtype is not known


@dataclass(frozen=True)
class Peaks:
    """The two roofs of a roofline for one dtype: peak FLOP/s and memory bandwidth (bytes/s).

    ``peak_flops_per_s`` and ``bandwidth_bytes_per_s`` are None only when ``source`` is UNKNOWN; ``description``
    then says why there is no roofline.
    """

    peak_flops_per_s: float | None
    bandwidth_bytes_per_s: float | None
    source: PeaksSource
    description: str
    dtype: str = "float32"  # the layer dtype these peaks are for
    # measured CPU peaks: the cores other processes kept busy meanwhile, when that contended (the roofs may read
    # low); None when they did not or it is not known
    others_busy: float | None = None

    @property
    def known(self) -> bool:
        return bool(self.source is not PeaksSource.UNKNOWN and self.peak_flops_per_s and self.bandwidth_bytes_per_s)

    @property
    def ridge_point(self) -> float | None:
        """FLOP/byte where the memory roof meets the compute roof: peak FLOP/s / bandwidth."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s if self.known else None  # type: ignore[operator]


def unknown_peaks(why: str, dtype: str = "float32") -> Peaks:
    return Peaks(None, None, PeaksSource.UNKNOWN, why, dtype)


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's dense (no sparsity) peaks from NVIDIA's datasheet, in FLOP/s and bytes/s."""

    label: str
    fp32: float  # CUDA cores, no tensor cores
    tf32: float | None  # tensor cores, TF32 (Ampere and later); None: the GPU has none
    fp16: float  # tensor cores, FP16 inputs with FP32 accumulation
    bf16: float | None  # tensor cores, BF16 (Ampere and later); None: the GPU has none
    bandwidth: float  # memory (HBM / GDDR)


# Datasheet numbers, dense: NVIDIA prints tensor-core peaks of Ampere and later "with sparsity" (twice the dense
# rate) and marks them with an asterisk; the dense half is what a convolution can reach. FLOPs count a multiply-add
# as 2, as conv_flops() does. Matched in order, by regular expressions on the device name
# (torch.cuda.get_device_name / the trace's deviceProperties "name"); more specific variants first.
# - V100: "NVIDIA Tesla V100 GPU Accelerator" datasheet: SXM2 15.7 TFLOPS single, 125 tensor, 900 GB/s HBM2;
#   PCIe 14 / 112 / 900; V100S PCIe 16.4 / 130 / 1134 GB/s. DGX Station (V100-DGXS) carries the SXM2 part.
# - A100: "NVIDIA A100 Tensor Core GPU" datasheet: FP32 19.5, TF32 156 (312*), BF16/FP16 312 (624*) TFLOPS;
#   1555 GB/s (40GB), 1935 GB/s (80GB PCIe), 2039 GB/s (80GB SXM).
# - H100: "NVIDIA H100 Tensor Core GPU" datasheet: SXM FP32 67, TF32 989*, BF16/FP16 1979* TFLOPS, 3.35 TB/s;
#   PCIe 51 / 756* / 1513*, 2 TB/s; NVL 60 / 835* / 1671*, 3.9 TB/s.
# - H200: "NVIDIA H200 Tensor Core GPU" datasheet: SXM FP32 67, TF32 989*, BF16/FP16 1979* TFLOPS, 4.8 TB/s;
#   NVL 60 / 835* / 1671*, 4.8 TB/s.
# - L4: "NVIDIA L4 Tensor Core GPU" datasheet: FP32 30.3, TF32 120*, BF16/FP16 242* TFLOPS, 300 GB/s.
# - A10: "NVIDIA A10 Tensor Core GPU" datasheet: FP32 31.2, TF32 62.5 (125*), BF16/FP16 125 (250*) TFLOPS, 600 GB/s.
#   (The A10G of AWS is a different part and is not matched.)
# - T4: "NVIDIA T4" datasheet: single 8.1, mixed FP16/FP32 65 TFLOPS, 320 GB/s GDDR6; Turing: no TF32, no BF16.
# - RTX 4090: "NVIDIA Ada GPU Architecture" whitepaper, appendix: FP32 82.6, TF32 82.6, FP16/BF16 tensor with FP32
#   accumulate 165.2 TFLOPS (GeForce runs FP32 accumulation at half the FP16-accumulate rate), 1008 GB/s GDDR6X.
GPU_SPECS: list[tuple[re.Pattern[str], GpuSpec]] = [
    (re.compile(r"V100S", re.I), GpuSpec("Tesla V100S PCIe", 16.4 * TERA, None, 130 * TERA, None, 1134 * GIGA)),
    (re.compile(r"V100.*PCIE", re.I), GpuSpec("Tesla V100 PCIe", 14 * TERA, None, 112 * TERA, None, 900 * GIGA)),
    (re.compile(r"V100", re.I), GpuSpec("Tesla V100 SXM2", 15.7 * TERA, None, 125 * TERA, None, 900 * GIGA)),
    (re.compile(r"A100.*SXM.*80\s*GB", re.I),
     GpuSpec("A100 80GB SXM", 19.5 * TERA, 156 * TERA, 312 * TERA, 312 * TERA, 2039 * GIGA)),
    (re.compile(r"A100.*80\s*GB", re.I),
     GpuSpec("A100 80GB PCIe", 19.5 * TERA, 156 * TERA, 312 * TERA, 312 * TERA, 1935 * GIGA)),
    (re.compile(r"A100", re.I), GpuSpec("A100 40GB", 19.5 * TERA, 156 * TERA, 312 * TERA, 312 * TERA, 1555 * GIGA)),
    (re.compile(r"H100.*PCIE", re.I),
     GpuSpec("H100 PCIe", 51 * TERA, 378 * TERA, 756.5 * TERA, 756.5 * TERA, 2000 * GIGA)),
    (re.compile(r"H100.*NVL", re.I),
     GpuSpec("H100 NVL", 60 * TERA, 417.5 * TERA, 835.5 * TERA, 835.5 * TERA, 3900 * GIGA)),
    (re.compile(r"H100", re.I), GpuSpec("H100 SXM", 67 * TERA, 494.5 * TERA, 989.5 * TERA, 989.5 * TERA, 3350 * GIGA)),
    (re.compile(r"H200.*NVL", re.I),
     GpuSpec("H200 NVL", 60 * TERA, 417.5 * TERA, 835.5 * TERA, 835.5 * TERA, 4800 * GIGA)),
    (re.compile(r"H200", re.I), GpuSpec("H200 SXM", 67 * TERA, 494.5 * TERA, 989.5 * TERA, 989.5 * TERA, 4800 * GIGA)),
    (re.compile(r"\bL4\b", re.I), GpuSpec("L4", 30.3 * TERA, 60 * TERA, 121 * TERA, 121 * TERA, 300 * GIGA)),
    (re.compile(r"\bA10\b", re.I), GpuSpec("A10", 31.2 * TERA, 62.5 * TERA, 125 * TERA, 125 * TERA, 600 * GIGA)),
    (re.compile(r"\bT4\b", re.I), GpuSpec("T4", 8.1 * TERA, None, 65 * TERA, None, 320 * GIGA)),
    (re.compile(r"RTX\s*4090", re.I),
     GpuSpec("GeForce RTX 4090", 82.6 * TERA, 82.6 * TERA, 165.2 * TERA, 165.2 * TERA, 1008 * GIGA)),
]


def gpu_spec(name: str) -> GpuSpec | None:
    """The datasheet entry for a GPU name, or None when the table does not know it."""
    return next((spec for pattern, spec in GPU_SPECS if pattern.search(name)), None)


def datasheet_peaks(name: str, dtype: str, allow_tf32: bool | None = None) -> Peaks:
    """A GPU's roofs for convolutions in ``dtype``, from NVIDIA's datasheet.

    float16 and bfloat16 convolutions run on tensor cores (bfloat16 on Volta/Turing, which have no BF16 tensor
    cores, gets the FP32 roof). float32 convolutions use the TF32 tensor-core roof on Ampere and later when
    cuDNN may use TF32 (``torch.backends.cudnn.allow_tf32``, recorded at capture); when the trace does not record
    it, PyTorch's default (True) is assumed and the description says so. Otherwise the FP32 CUDA-core roof.
    """
    spec = gpu_spec(name)
    if spec is None:
        return unknown_peaks(f"no datasheet peaks for the GPU {name!r}", dtype)
    bandwidth = f"{spec.bandwidth / GIGA:g} GB/s memory"
    if dtype == "float16":
        return Peaks(spec.fp16, spec.bandwidth, PeaksSource.DATASHEET,
                     f"{spec.label} datasheet: {spec.fp16 / TERA:g} TFLOP/s FP16 tensor cores, {bandwidth}", dtype)
    if dtype == "bfloat16":
        if spec.bf16 is None:
            return Peaks(spec.fp32, spec.bandwidth, PeaksSource.DATASHEET,
                         f"{spec.label} datasheet: {spec.fp32 / TERA:g} TFLOP/s FP32 (no BF16 tensor cores), "
                         f"{bandwidth}", dtype)
        return Peaks(spec.bf16, spec.bandwidth, PeaksSource.DATASHEET,
                     f"{spec.label} datasheet: {spec.bf16 / TERA:g} TFLOP/s BF16 tensor cores, {bandwidth}", dtype)
    if dtype != "float32":
        return unknown_peaks(f"no datasheet peaks for {dtype} convolutions", dtype)
    if spec.tf32 is not None and allow_tf32 is not False:
        assumed = "" if allow_tf32 else " (cudnn.allow_tf32 not recorded: PyTorch's default, True, assumed)"
        return Peaks(spec.tf32, spec.bandwidth, PeaksSource.DATASHEET,
                     f"{spec.label} datasheet: {spec.tf32 / TERA:g} TFLOP/s TF32 tensor cores{assumed}, {bandwidth}",
                     dtype)
    why = " (TF32 off)" if spec.tf32 is not None else ""
    return Peaks(spec.fp32, spec.bandwidth, PeaksSource.DATASHEET,
                 f"{spec.label} datasheet: {spec.fp32 / TERA:g} TFLOP/s FP32{why}, {bandwidth}", dtype)


# ------------------------------------------------------------------------------------------------ traces



def trace_peaks(environment: RecordedEnvironment, device_properties: list[dict[str, Any]], on_gpu: bool,
                dtype: str) -> Peaks:
    """The roofs for ``dtype`` convolutions of a trace, from what it records.

    GPU traces: the datasheet entry for the device name (recorded by convdoctor, else the trace's
    deviceProperties). CPU traces: the peaks convdoctor measured at capture, recorded in the environment; a CPU
    trace captured elsewhere has none (this machine's peaks would say nothing about that one's).
    """
    if on_gpu:
        recorded = environment.device_name if (environment.device or "cuda").startswith("cuda") else None
        named = [p.get("name") for p in device_properties if isinstance(p, dict)]
        name = next((n for n in (recorded, *named) if isinstance(n, str) and n.strip()), None)
        if name is None:
            return unknown_peaks("the trace names no GPU", dtype)
        return datasheet_peaks(name, dtype, environment.cudnn_allow_tf32)
    flops, bandwidth = environment.peak_flops, environment.peak_bandwidth
    if environment.peaks_source != PeaksSource.MEASURED.value or not (_rate(flops) and _rate(bandwidth)):
        return unknown_peaks("the trace records no CPU peaks (it was not captured by `convdoctor profile`, or by an "
                             "older version)", dtype)
    recorded_dtype = environment.peaks_dtype or "float32"
    if recorded_dtype != dtype:
        return unknown_peaks(f"the CPU peaks were measured in {recorded_dtype}, the convolutions run in {dtype}",
                             dtype)
    description = environment.peaks_description or "measured at capture"
    return Peaks(float(flops), float(bandwidth), PeaksSource.MEASURED, description, dtype,
                 others_busy=environment.peaks_others_busy)


def _rate(value: Any) -> bool:
    """A recorded rate that can be a roof: a finite positive number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:  # an int beyond float range: no roof
        return False
