"""Wording shared by the HTML and terminal reports: the headline and how a measurement reads."""

from __future__ import annotations

from convdoctor.analyzer.conv.compiled import CompiledLayer, CompiledView, KernelTime
from convdoctor.analyzer.conv.kernels import NON_COMPUTE_FAMILIES, LayerKernels
from convdoctor.analyzer.conv.roofline import Roofline
from convdoctor.analyzer.measure.results import (
    PREDICTION_FACTOR,
    BatchSweep,
    Measurement,
    ThroughputPoint,
    Verdict,
)
from convdoctor.analyzer.step.memory import MemoryView
from convdoctor.reports.report import FindingOutcome, Plan, Report
from convdoctor.rules.base import Finding, SavingBound


def headline(report: Report) -> str:
    """The verdict in one sentence."""
    analysis = report.analysis
    if not analysis.layers and report.compiled is not None and report.compiled.layers:
        return (f"A compiled model's trace: its {len(report.compiled.layers)} conv layers are in the Compiled view, "
                "outside the ATen conv operators the eager analysis reads.")
    if not analysis.layers:
        return "No convolutions were found in the profiled steps."
    count = len(analysis.layers)
    opening = f"Convolutions are {analysis.conv_share:.0%} of step time ({count} layer{'' if count == 1 else 's'})."
    return f"{opening} {_plan_sentence(report)}{process_setting_sentence(report.outcomes)}"


def _plan_sentence(report: Report) -> str:
    plan = report.plan
    if plan is not None:
        fixes = plan.steps[0].finding.fix if len(plan.steps) == 1 else f"The plan below ({len(plan.steps)} fixes)"
        if plan.measurement.estimate.verdict is Verdict.FASTER:
            return f"{fixes} makes it {speedup_text(plan.measurement)}, measured."
        return f"{fixes}, measured together: {speedup_text(plan.measurement)}."
    if report.busy_machine is not None:
        return (f"No plan: {report.busy_machine.unreliable} of {report.busy_machine.measured} measurements were "
                "taken while other processes kept the cores busy.")
    if any(o.measurement for o in report.outcomes):
        return "No candidate made it measurably faster without changing the model."
    return f"{len(report.outcomes)} finding(s); none measured."


def process_setting_sentence(outcomes: list[FindingOutcome]) -> str:
    """The best process setting measured faster (in worker processes, so never a plan step), or nothing."""
    faster = [o for o in outcomes if o.finding.candidate is not None
              and o.finding.candidate.process_environment is not None and o.measurement is not None
              and o.measurement.estimate.verdict is Verdict.FASTER]
    if not faster:
        return ""
    best = max(faster, key=lambda o: o.measurement.estimate.speedup)  # type: ignore[union-attr]
    return (f" Apart from that, a process setting ({best.finding.rule_id}) makes it "
            f"{speedup_text(best.measurement)}, measured in worker processes with and without it.")  # type: ignore[arg-type]


def measured_result(outcome: FindingOutcome) -> str:
    """``1.23× faster (95% CI 1.10–1.35×)`` or ``no measurable difference (…)``, or why it was not measured."""
    if outcome.throughput is not None:
        return throughput_result(outcome.throughput)
    if outcome.measurement is None:
        return f"not measured: {outcome.not_measured}"
    shared = f" (the same candidate as {outcome.same_candidate_as}, measured once)" if outcome.same_candidate_as else ""
    return speedup_text(outcome.measurement) + shared


def speedup_text(measurement: Measurement) -> str:
    """A measured speedup with its interval, worded by its verdict; no figure when it is unreliable."""
    e = measurement.estimate
    if e.verdict is Verdict.UNRELIABLE:
        return unreliable_text(measurement)
    interval = f"{e.ci_low:.2f}–{e.ci_high:.2f}×"
    if e.verdict is Verdict.NO_DIFFERENCE:
        return f"no measurable difference ({e.speedup:.2f}×, 95% CI {interval})"
    return f"{e.speedup:.2f}× {e.verdict.value} (95% CI {interval})"


def unreliable_text(measurement: Measurement) -> str:
    """Why a measurement has no verdict: ``unreliable, no verdict: other processes kept … busy in 4 of 6 blocks``."""
    contention = measurement.contention
    return (f"unreliable, no verdict: other processes kept {contention.busiest} busy in {contention.contended_blocks} "
            f"of {measurement.blocks} blocks")


def busy_banner(report: Report) -> str | None:
    """What to do when the machine was busy: the headline's first line, in the terminal and the HTML."""
    busy = report.busy_machine
    if busy is None:
        return None
    return (f"Unreliable: other processes kept {busy.busiest} busy while convdoctor timed, and still did after "
            f"{busy.waited_s:.0f} s of waiting for quiet (--wait-quiet {busy.wait_s:g}). {busy.unreliable} of "
            f"{busy.measured} measurements have no verdict and no plan was built from them. Close those processes "
            f"and rerun, or pass --wait-quiet {max(300, 2 * busy.wait_s):g} to wait longer.")


def throughput_result(sweep: BatchSweep) -> str:
    """``batch 8: 2.10× the samples/s of batch 1 (95% CI 1.9–2.3×)``, or that no larger batch was faster."""
    best = sweep.best
    if best is None:
        tried = ", ".join(str(p.batch_size) for p in sweep.points)
        return f"no larger batch ({tried}) was measurably faster per sample than batch {sweep.baseline_batch}"
    return f"batch {best.batch_size}: {throughput_text(best)}"


def throughput_text(point: ThroughputPoint) -> str:
    """One batch size's samples/s against the baseline batch, with its interval, worded by its verdict."""
    e = point.estimate
    if e.verdict is Verdict.UNRELIABLE:
        return unreliable_text(point.measurement)
    interval = f"95% CI {e.ci_low:.2f}–{e.ci_high:.2f}×"
    rates = f"{point.samples_per_s:.1f} vs {point.baseline_samples_per_s:.1f} samples/s"
    if e.verdict is Verdict.NO_DIFFERENCE:
        return f"no measurable difference in samples/s against batch {point.baseline_batch} ({rates}, " \
               f"{e.speedup:.2f}×, {interval})"
    word = "more" if e.verdict is Verdict.FASTER else "fewer"
    return f"{e.speedup:.2f}× {word} samples/s than batch {point.baseline_batch} ({rates}, {interval})"


def throughput_lines(sweep: BatchSweep) -> list[str]:
    """One line per batch size tried, then why the sweep stopped."""
    return [f"batch {p.batch_size}: {throughput_text(p)}" for p in sweep.points] + [f"stopped: {sweep.stopped}"]


def layer_lines(outcome: FindingOutcome) -> list[str]:
    """One line per layer measured alone: ``layer 1 alone, input [1, 32, 56, 56]: no measurable difference (…)``."""
    return [f"layer {m.layer} alone, input {list(m.input_shape)}: "
            + (speedup_text(m.measurement) if m.measurement is not None else f"not measured: {m.not_measured}")
            for m in outcome.layer_measurements]


def plan_lines(plan: Plan) -> list[str]:
    """The plan's steps with their own results and predictions, then the combined result (or why it has none)."""
    lines = [f"{step.finding.fix} ({step.finding.rule_id}): alone {result_with_prediction(step)}"
             for step in plan.steps]
    lines.append(f"together: {speedup_text(plan.measurement)}")
    return lines


def result_with_prediction(outcome: FindingOutcome) -> str:
    """The measured result, then what the analysis predicted: ``1.20× faster (…); predicted 1.15×``."""
    result = measured_result(outcome)
    finding = outcome.finding
    if finding.estimated_saving is None or outcome.throughput is not None:
        return result
    speedup = finding.predicted_speedup
    if outcome.measurement is None or speedup is None:
        return f"{result}; {predicted_saving(finding)}"
    if finding.saving_bound is SavingBound.AT_MOST:
        return f"{result}; predicted at most {speedup:.2f}×"
    if finding.saving_bound is SavingBound.PART:
        return f"{result}; {speedup:.2f}× visible in the trace (the rest of the effect is not)"
    if outcome.off_prediction:
        return (f"{result}; predicted {speedup:.2f}×: the measurement stays more than {PREDICTION_FACTOR:g}× off "
                "the predicted saving after a second look")
    return f"{result}; predicted {speedup:.2f}×"


def predicted_saving(finding: Finding) -> str:
    """``predicted saving 4%``, ``predicted saving at most 12%``, or ``2% visible in the trace (…)``."""
    saving = finding.estimated_saving
    if finding.saving_bound is SavingBound.AT_MOST:
        return f"predicted saving at most {saving:.0%}"
    if finding.saving_bound is SavingBound.PART:
        return f"{saving:.0%} visible in the trace (the rest of the effect is not)"
    if saving < 0:
        return f"predicted to cost {-saving:.0%}"
    return f"predicted saving {saving:.0%}"


def left_out_lines(plan: Plan) -> list[str]:
    """One line per accepted fix the plan measured without, and why."""
    return [f"left out: {left.outcome.finding.fix} ({left.outcome.finding.rule_id}), alone "
            f"{measured_result(left.outcome)}: {left.reason}" for left in plan.left_out]


def architecture_note(outcome: FindingOutcome) -> str | None:
    """``architecture change, needs retraining: FLOPs 7.40 → 1.85 G (0.25×), params 73.9 k → 18.5 k (0.25×)``."""
    delta = outcome.architecture
    if delta is None:
        return None
    return (f"architecture change, needs retraining: FLOPs {_si(delta.before.flops)} → {_si(delta.after.flops)} "
            f"({delta.flops_ratio:.2f}×), params {_si(delta.before.params)} → {_si(delta.after.params)} "
            f"({delta.params_ratio:.2f}×)")


def _si(value: float) -> str:
    for factor, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:g}"


def tensorboard_command(logdir: str) -> str:
    """The command that opens the traces in TensorBoard's PyTorch Profiler plugin."""
    return f"tensorboard --logdir {logdir}"


def kernel_columns(kernels: LayerKernels | None) -> tuple[str, str, str]:
    """A layer's device kernels as three table cells: algorithms per pass (slowest first), tensor-core share, and
    what runs after its forward (the neighbours, slowest first, ms per step). Empty on CPU traces."""
    if kernels is None:
        return "", "", ""
    compute = [key for key, _ in kernels.algorithms_by_time if key[1] not in NON_COMPUTE_FAMILIES]
    passes = []
    for which in ("forward", "backward"):
        families = [family for pass_, family in compute if pass_ == which]
        if families:
            passes.append(f"{which[:3]}: {', '.join(families)}")
    share = kernels.tensor_core_share
    tensor_cores = "?" if share is None else f"{share * 100:.0f}%"
    after = ", ".join(f"{category} {n.us_per_step / 1e3:.3f}" for category, n in kernels.neighbours_by_time[:3])
    return "; ".join(passes), tensor_cores, after


def no_roofline_reason(roofline: Roofline | None) -> str:
    """Why the report draws no roofline."""
    if roofline is None:
        return "the report was made without one."
    if not roofline.peaks.known:
        return roofline.peaks.description + "."
    return "no layer has known FLOPs, bytes and forward time."


def memory_peak_line(memory: MemoryView) -> str:
    """``Memory peak: 12.3 MB on cpu (step 5, 4.210 ms in); most allocated by aten::conv2d (8.1 MB per step)``."""
    peaks = "; ".join(f"{byte_size(d.peak_bytes)} on {d.device}" + (" since the trace's first memory event"
                                                                     if d.relative else "")
                      + f" ({'' if d.step is None else f'step {d.step}, '}{d.peak_at_us / 1e3:.3f} ms in)"
                      for d in memory.devices)
    top = memory.top_ops[0] if memory.top_ops else None
    most = f"; most allocated by {top.name} ({byte_size(round(top.bytes_per_step))} per step)" if top else ""
    return f"Memory peak: {peaks}{most}"


def byte_size(count: int) -> str:
    """``812 kB``, ``12.7 MB``, ``3.1 GB`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} B"


def compiled_headline(view: CompiledView) -> str:
    """``Compiled by the model file (torch.compile, Inductor): step 0.74 ms, eager 2.10 ms (each timed once without
    the profiler, not interleaved: a reading, not a measured speedup); the first call, compile included, took
    17.5 s.``"""
    by = "by the model file" if view.by_model_file else "by convdoctor's --compiled"
    frozen = ", freezing on" if view.freezing else ""
    step = view.unprofiled_step_ms
    if step is None:
        timing = f"step {view.step_ms:.2f} ms under the profiler (not timed without it)"
    elif view.step_ratio is None:
        timing = f"step {step:.2f} ms (the eager step was not timed without the profiler: no comparison)"
    else:  # two separate timings: CD116's and CD120's candidates measure what compiling gains
        timing = (f"step {step:.2f} ms, eager {view.eager_unprofiled_step_ms:.2f} ms (each timed once without the "
                  "profiler, not interleaved: a reading, not a measured speedup)")
    first = "" if view.compile_s is None else f"; the first call, compile included, took {view.compile_s:.1f} s"
    return f"Compiled {by} (torch.compile, Inductor{frozen}): {timing}{first}"


def kernel_time_text(kernel: KernelTime) -> str:
    """``aten::convolution 0.297 ms`` (per step), or ``... time unknown (not seen in the trace)``."""
    if kernel.ms_per_step is None:
        return f"{kernel.kernel} time unknown (not seen in the trace)"
    calls = f" ({kernel.calls_per_step:g} calls)" if kernel.calls_per_step != 1 else ""
    return f"{kernel.kernel} {kernel.ms_per_step:.3f} ms{calls}"


def compiled_layer_cells(layer: CompiledLayer) -> tuple[str, str]:
    """What computes the conv (its library call and time, or the generated kernel it went into) and the generated
    kernels that took its neighbours, with the modules each one does."""
    if layer.extern:
        conv = "; ".join(kernel_time_text(k) for k in layer.extern)
    elif layer.fused_into is not None:
        conv = f"fused into {layer.fused_into}"
    else:
        conv = "no conv call of its own in the trace"
    fused = "; ".join(f"{kernel_time_text(k)} [{', '.join(k.modules)}]" for k in layer.fused) or "none"
    return conv, fused


def compiled_layer_line(layer: CompiledLayer) -> str:
    """One layer of the compiled view in a line: ``aten::convolution 2.920 ms; 2 generated kernels 0.342 ms for
    bn1, relu`` (the HTML names each kernel)."""
    conv, _ = compiled_layer_cells(layer)
    if not layer.fused:
        return f"{conv}; no generated kernel"
    fused = layer.fused_ms_per_step
    time = f" {fused:.3f} ms" if fused is not None else ", time unknown"
    count = f"{len(layer.fused)} generated kernel{'s' if len(layer.fused) != 1 else ''}"
    return f"{conv}; {count}{time}" + (f" for {', '.join(layer.neighbours)}" if layer.neighbours else "")
