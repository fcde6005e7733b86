"""Whether the CPU a trace was captured on computes bfloat16 natively, from the facts capture recorded (CD119, CD121).

Capture records three facts (``analyzer/capture/hardware.py``, ``low_precision_environment``): torch's own check
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (false: a bfloat16 conv leaves oneDNN for ATen's reference
``thnn_conv2d``), the low-precision flags of /proc/cpuinfo, and ``torch.backends.cpu.get_cpu_capability()``. Reading
them here, not the machine that runs ``analyze``, makes ``analyze`` of a trace decide as ``profile`` did.
"""

from __future__ import annotations

from dataclasses import dataclass

from convdoctor.analyzer.trace.environment import RecordedEnvironment

# x86: AVX512-BF16 (Cooper Lake, Zen 4 and later) and AMX-BF16 (Sapphire Rapids and later); Arm: FEAT_BF16
# (Neoverse V1/N2, Graviton3). Strongest first: the first one present is the one a finding names.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


@dataclass(frozen=True)
class CpuBf16:
    """The recorded facts about bfloat16 on the capture's CPU, and what they decide."""

    mkldnn_bf16_supported: bool | None  # torch.ops.mkldnn._is_mkldnn_bf16_supported(); None: not recorded
    cpu_low_precision_flags: str | None  # the low-precision /proc/cpuinfo flags, space-separated; None: not recorded
    cpu_capability: str | None  # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, ...

    @classmethod
    def from_environment(cls, environment: RecordedEnvironment) -> CpuBf16:
        return cls(environment.mkldnn_bf16_supported, environment.cpu_low_precision_flags,
                   environment.cpu_capability)

    @property
    def native_flag(self) -> str | None:
        """The strongest native-bfloat16 flag /proc/cpuinfo listed; None when it listed none or was not recorded."""
        present = set((self.cpu_low_precision_flags or "").split())
        return next((flag for flag in NATIVE_BF16_FLAGS if flag in present), None)

    @property
    def native(self) -> bool | None:
        """True: bfloat16 convolutions run in oneDNN on bfloat16 hardware; False: they do not; None: not recorded."""
        if self.mkldnn_bf16_supported is False:
            return False  # torch sends bfloat16 convs to the reference path, whatever the CPU has
        if self.cpu_low_precision_flags is not None:
            return self.native_flag is not None
        return self.mkldnn_bf16_supported  # no /proc/cpuinfo (macOS, Windows): torch's check alone

    @property
    def decided_by(self) -> str:
        """The recorded fact that decided ``native``, in words."""
        if self.mkldnn_bf16_supported is False:
            return (f"torch.ops.mkldnn._is_mkldnn_bf16_supported() was False at capture (CPU capability "
                    f"{self.cpu_capability or 'unknown'}): bfloat16 convs run ATen's reference thnn_conv2d")
        if self.cpu_low_precision_flags is not None:
            if self.native_flag is not None:
                return f"/proc/cpuinfo flag {self.native_flag}"
            return ("no avx512_bf16, amx_bf16 or bf16 flag in /proc/cpuinfo (oneDNN would emulate bfloat16 with "
                    "float32 arithmetic)")
        if self.mkldnn_bf16_supported:
            return "torch.ops.mkldnn._is_mkldnn_bf16_supported() was True at capture (no /proc/cpuinfo recorded)"
        return "the trace does not record the CPU's bfloat16 support (captured by another tool or an older convdoctor)"
