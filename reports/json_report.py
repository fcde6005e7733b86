"""report.json: the machine-readable report (its shape is reports/report.schema.json)."""

from __future__ import annotations

import json
import math
from typing import Any

from convdoctor.analyzer.conv.communication import DEFINITIONS as COMM_DEFINITIONS
from convdoctor.analyzer.conv.compiled import CompiledView, KernelTime
from convdoctor.analyzer.conv.job_view import JobView
from convdoctor.analyzer.conv.kernels import KernelShare, KernelTotals, LayerKernels
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.conv.roofline import Roofline
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta
from convdoctor.analyzer.measure.results import (
    CONFIDENCE,
    BatchSweep,
    GradientReference,
    Measurement,
    SpeedupEstimate,
    ThroughputPoint,
)
from convdoctor.analyzer.step.critical_path import NoCriticalPath
from convdoctor.analyzer.step.hta import HtaViews
from convdoctor.analyzer.step.kernels import Kernels
from convdoctor.analyzer.step.memory import MemoryView
from convdoctor.analyzer.step.modules import ModuleNode, ModulesView
from convdoctor.analyzer.step.operators import DEFINITIONS as OPERATOR_DEFINITIONS
from convdoctor.analyzer.step.operators import OperatorRow, Operators
from convdoctor.analyzer.step.overview import DEFINITIONS as OVERVIEW_DEFINITIONS
from convdoctor.analyzer.step.overview import Overview, Part
from convdoctor.reports.report import SCHEMA_VERSION, FindingOutcome, Plan, Report, ReportLayer
from convdoctor.rules.base import evidence_fields


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON data."""
    analysis = report.analysis
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": report.tool_version,
        "workload": vars(report.workload).copy(),
        "summary": {
            "time_basis": analysis.time_basis.value,
            "step_time_ms": analysis.step_time_us / 1e3,
            "unprofiled_step_ms": analysis.unprofiled_step_us / 1e3 if analysis.unprofiled_step_us else None,
            "conv_time_ms": analysis.conv_time_us / 1e3,
            "conv_share": analysis.conv_share,
            "conversion_time_ms": analysis.conversion_time_us / 1e3,
            "notes": list(report.notes),
            "peaks": _peaks(report.roofline),
            "device_kernels": _kernel_totals(report.kernel_totals),
            "steps_from": report.steps_from,
            "rank": report.rank,
            "gpu": _gpu(analysis),
            "communication": _communication(analysis),
        },
        "layers": [_layer(row) for row in report.layers],
        "findings": [_outcome(outcome) for outcome in report.outcomes],
        "plan": None if report.plan is None else _plan(report.plan),
        "skipped_rules": dict(report.skipped_rules),
        "rule_problems": list(report.rule_problems),
        "trace_files": list(report.trace_files),
        "logdir": report.logdir,
        "reliable": report.busy_machine is None,
        "busy_machine": None if report.busy_machine is None else vars(report.busy_machine).copy(),
        "hta": hta_to_dict(report.hta, report.hta_reason),
        "compiled": None if report.compiled is None else _compiled(report.compiled),
        **({"distributed": distributed_to_dict(analysis.job)} if analysis.job is not None else {}),
        "modules": None if report.modules is None else _modules(report.modules),
        "memory": None if report.memory is None else _memory(report.memory),
        **({} if report.views is None else {
            "overview": _overview(report.views.overview),
            "operators": _operators(report.views.operators),
            "kernels": _kernels(report.views.kernels),
        }),
    }


def _compiled(view: CompiledView) -> dict[str, Any]:
    """What torch.compile did to each conv layer, and the compiled step against the eager one."""
    return {
        "compiled_by": view.compiled_by, "freezing": view.freezing, "compile_s": view.compile_s,
        "step_ms": view.step_ms, "unprofiled_step_ms": view.unprofiled_step_ms,
        "eager_unprofiled_step_ms": view.eager_unprofiled_step_ms, "step_ratio": view.step_ratio,
        "layers": [{"name": layer.name, "attribution": layer.attribution, "ms_per_step": layer.ms_per_step,
                    "fused_into": layer.fused_into, "neighbours": list(layer.neighbours),
                    "extern": [_kernel_time(k) for k in layer.extern], "fused": [_kernel_time(k) for k in layer.fused]}
                   for layer in view.layers],
        "kernels": [_kernel_time(k) for k in view.kernels],
        "folded": list(view.folded), "unmatched_ms_per_step": view.unmatched_ms_per_step, "notes": list(view.notes),
    }


def _kernel_time(kernel: KernelTime) -> dict[str, Any]:
    return {"kernel": kernel.kernel, "modules": list(kernel.modules), "attribution": kernel.attribution,
            "extern": kernel.extern, "calls_per_step": kernel.calls_per_step, "ms_per_step": kernel.ms_per_step}


def _modules(view: ModulesView) -> dict[str, Any]:
    """The module tree, whole (the HTML shows a part of it)."""
    return {"time_basis": view.time_basis.value, "module_count": view.module_count,
            "flops_counted": view.flops_counted, "notes": list(view.notes), "tree": [_module(n) for n in view.roots]}


def _module(node: ModuleNode) -> dict[str, Any]:
    return {"name": node.name, "class_name": node.class_name, "calls_per_step": node.calls_per_step,
            "forward_ms": node.forward_us / 1e3,
            "backward_ms": None if node.backward_us is None else node.backward_us / 1e3,
            "flops": node.flops, "parameters": node.parameters, "output_bytes": node.output_bytes,
            "children": [_module(child) for child in node.children]}


def _memory(view: MemoryView) -> dict[str, Any]:
    """Each device's allocation curve and peak, and the operators that allocate most."""
    return {
        "notes": list(view.notes),
        "devices": [{"device": d.device, "step": d.step, "step_ms": d.step_us / 1e3, "peak_bytes": d.peak_bytes,
                     "peak_at_ms": d.peak_at_us / 1e3, "relative": d.relative, "events": d.events,
                     "curve": [[t / 1e3, allocated] for t, allocated in d.curve]} for d in view.devices],
        "top_operators": [{"name": o.name, "device": o.device, "bytes_per_step": o.bytes_per_step,
                           "allocations_per_step": o.allocations_per_step} for o in view.top_ops],
        "other_operators": view.other_ops,
        "other_bytes_per_step": view.other_bytes_per_step,
    }


def _parts(parts: tuple[Part, ...]) -> list[dict[str, Any]]:
    return [{"name": p.name, "time_ms": p.time_us / 1e3, "share": p.share} for p in parts]


def _overview(view: Overview | None) -> dict[str, Any] | None:
    """The step-time breakdown per step and averaged, and the GPU's use (None on a CPU trace, with the reason)."""
    if view is None:
        return None
    return {"step_ms": view.step_us / 1e3, "parts": _parts(view.parts),
            "steps": [{"step": s.step, "span_ms": s.span_us / 1e3, "parts": _parts(s.parts)} for s in view.steps],
            "gpu": None if view.gpu is None else vars(view.gpu).copy(), "gpu_missing": view.gpu_missing,
            "verdict": view.verdict, "definitions": OVERVIEW_DEFINITIONS}


def _operator_row(row: OperatorRow) -> dict[str, Any]:
    return {"name": row.name, **({} if row.input_shapes is None else {"input_shapes": row.input_shapes}),
            "calls": row.calls, "host_self_ms": row.host_self_us / 1e3, "host_total_ms": row.host_total_us / 1e3,
            "device_self_ms": row.device_self_us / 1e3, "device_total_ms": row.device_total_us / 1e3}


def _operators(view: Operators) -> dict[str, Any]:
    """Every operator by name and by name and input shapes, summed over the whole trace."""
    return {"steps": view.steps, "has_shapes": view.has_shapes, "by_name": [_operator_row(r) for r in view.by_name],
            "by_shape": [_operator_row(r) for r in view.by_shape], "definitions": OPERATOR_DEFINITIONS}


def _kernels(view: Kernels | None) -> dict[str, Any] | None:
    """Every GPU kernel by name, summed over the whole trace."""
    if view is None:
        return None
    return {"steps": view.steps, "total_ms": view.total_us / 1e3, "rows": [{
        "name": r.name, "calls": r.calls, "total_ms": r.total_us / 1e3, "mean_ms": r.mean_us / 1e3,
        "min_ms": r.min_us / 1e3, "max_ms": r.max_us / 1e3, "blocks_per_sm": r.blocks_per_sm,
        "occupancy_pct": r.occupancy_pct, "tensor_cores": r.tensor_cores, "launcher": r.launcher,
        "launchers": r.launchers} for r in view.rows]}


def hta_to_dict(views: HtaViews | None, reason: str | None) -> dict[str, Any]:
    """The HTA-class views (times in µs, as HTA's); their reason instead where the trace has none."""
    if views is None:
        return {"available": False, "reason": reason}
    launches, path, syncs, pageable = views.launches, views.critical_path, views.syncs, views.pageable
    return {
        "available": True,
        "reason": None,
        "idle_time": {
            "consecutive_kernel_delay_us": views.idle.consecutive_kernel_delay_us,
            "streams": [{"device": s.device, "stream": s.stream, "events": s.events, "idle_us": s.idle_us,
                         "host_wait_us": s.host_wait_us, "kernel_wait_us": s.kernel_wait_us, "other_us": s.other_us}
                        for s in views.idle.streams],
        },
        "launches": None if launches is None else {
            **{k: v for k, v in vars(launches).items() if k != "kernels"},
            "kernels": [vars(k).copy() for k in launches.kernels],
        },
        "queue_length": [{**{k: v for k, v in vars(q).items() if k != "series"},
                          "series": [[t, n] for t, n in q.series]} for q in views.queues],
        "synchronizations": {
            "steps": syncs.steps, "count": syncs.count, "blocked_us": syncs.blocked_us,
            "has_python_stacks": syncs.has_python_stacks, "sites_left_out": syncs.sites_left_out,
            "pageable_copy_count": syncs.pageable_copy_count,
            "pageable_copy_blocked_us": syncs.pageable_copy_blocked_us,
            "sites": [vars(site).copy() for site in syncs.sites],
        },
        "pageable_htod": {**vars(pageable), "operators": list(pageable.operators)},
        "critical_path": ({"available": False, "reason": path.reason} if isinstance(path, NoCriticalPath) else {
            "available": True, "reason": None,
            **{k: v for k, v in vars(path).items() if k != "kernels"},
            "kernels": [vars(k).copy() for k in path.kernels]}),
    }


def distributed_to_dict(job: JobView) -> dict[str, Any]:
    """The job's view across ranks: communication, overlap and work per rank, stragglers, conv layers by rank."""
    straggler = job.straggler
    return {
        "world_size": job.world_size,
        "backend": job.backend,
        "time_basis": job.time_basis,
        "definitions": COMM_DEFINITIONS,
        "comm_share": job.comm_share,
        "overlap_fraction": job.overlap_fraction,
        "ranks": [{
            "rank": r.rank, "trace": r.trace, "step_ms": r.step_us / 1e3, "comm_ms": r.comm_us / 1e3,
            "overlap_ms": r.overlap_us / 1e3, "exposed_comm_ms": r.exposed_comm_us / 1e3,
            "compute_ms": r.compute_us / 1e3, "work_ms": r.work_us / 1e3, "comm_share": r.comm_share,
            "overlap_fraction": r.overlap_fraction, "allreduce_calls_per_step": r.allreduce_calls,
            "conv_ms": r.conv_us / 1e3,
        } for r in job.ranks],
        "steps": [{"step": s.number, "work_ms": [w / 1e3 for w in s.work_us],
                   "slowest_rank": s.slowest_rank_reported,
                   "excess_ms": s.excess_us / 1e3, "excess_fraction": s.excess_fraction} for s in job.steps],
        "straggler": None if straggler is None else {
            "rank": straggler.rank, "decided": straggler.decided, "steps": straggler.steps,
            "excess_ms": straggler.excess_us / 1e3, "excess_low_ms": straggler.excess_low_us / 1e3,
            "excess_high_ms": straggler.excess_high_us / 1e3, "excess_fraction": straggler.excess_fraction,
            "extra_compute_ms": straggler.extra_compute_us / 1e3,
            "extra_untraced_ms": straggler.extra_untraced_us / 1e3, "cause": straggler.own_cause,
        },
        "verdict": job.verdict,
        "layers_differ": job.layers_differ,
        "layers": [{"name": layer.name, "time_ms": [None if t is None else t / 1e3 for t in layer.time_us]}
                   for layer in job.layers],
    }


def _gpu(analysis: ConvAnalysis) -> dict[str, Any] | None:
    """Per step, on the busiest device: kernel time (all devices), busy (kernels, memcpy, memset), idle, span."""
    timeline = analysis.gpu_timeline
    if timeline is None:
        return None
    return {"device": timeline.device, "kernel_ms": timeline.kernel_us / 1e3, "busy_ms": timeline.busy_us / 1e3,
            "idle_ms": timeline.idle_us / 1e3, "span_ms": timeline.span_us / 1e3, "idle_share": timeline.idle_share,
            "kernels_per_step": timeline.kernels_per_step}


def _communication(analysis: ConvAnalysis) -> dict[str, Any] | None:
    """Per step: collective time, its overlap with compute, NCCL kernel time, DDP's gradient buckets."""
    view = analysis.communication
    if view is None:
        return None
    return {"time_basis": view.time_basis, "comm_ms": view.mean("comm_us") / 1e3,
            "overlap_ms": view.mean("overlap_us") / 1e3, "compute_ms": view.mean("compute_us") / 1e3,
            "nccl_kernel_ms": view.mean("nccl_kernel_us") / 1e3, "buckets": view.mean("allreduce_calls"),
            "gradient_mib": view.mean("allreduce_bytes") / 2**20, "definitions": COMM_DEFINITIONS}


def dict_to_json(data: dict[str, Any]) -> str:
    """report_to_dict's result as indented JSON text."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _peaks(roofline: Roofline | None) -> dict[str, Any] | None:
    """The roofs in GFLOP/s and GB/s, or None where there is no roofline (the notes say why)."""
    if roofline is None or not roofline.peaks.known:
        return None
    peaks = roofline.peaks
    return {
        "peak_gflops": peaks.peak_flops_per_s / 1e9,
        "bandwidth_gbs": peaks.bandwidth_bytes_per_s / 1e9,
        "ridge_flop_per_byte": peaks.ridge_point,
        "dtype": peaks.dtype,
        "source": peaks.source.value,
        "description": peaks.description,
    }


def _kernel_totals(totals: KernelTotals | None) -> dict[str, Any] | None:
    """Conv kernel time per step by pass and algorithm family, and the share on tensor cores (GPU traces only)."""
    if totals is None:
        return None
    return {
        "tensor_core_share": totals.tensor_core_share,
        "algorithms": [{"pass": p, "family": f, "time_ms": us / 1e3} for p, f, us in totals.by_family_us],
    }


def _kernel_shares(rows: list[tuple[Any, KernelShare]], key_names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**dict(zip(key_names, key if isinstance(key, tuple) else (key,))), "time_ms": share.us_per_step / 1e3,
             "launches_per_step": round(share.launches_per_step, 3), "names": list(share.names)}
            for key, share in rows]


def _device_kernels(kernels: LayerKernels | None) -> dict[str, Any] | None:
    if kernels is None:
        return None
    return {
        "tensor_core_share": kernels.tensor_core_share,
        "algorithms": _kernel_shares(kernels.algorithms_by_time, ("pass", "family")),
        "neighbours": _kernel_shares(kernels.neighbours_by_time, ("category",)),
    }


def _layer(row: ReportLayer) -> dict[str, Any]:
    layer, roofline = row.layer, row.roofline
    return {
        "name": layer.name,
        "module_class": layer.module_class,
        "op": layer.op,
        "input_shape": layer.input_shape,
        "weight_shape": layer.weight_shape,
        "output_shape": layer.output_shape,
        "stride": layer.stride,
        "padding": layer.padding,
        "dilation": layer.dilation,
        "groups": layer.groups,
        "dtype": layer.dtype,
        "memory_format": layer.memory_format.value,
        "calls": layer.calls,
        "calls_per_step": layer.calls_per_step,
        "time_ms": layer.time_per_step_us / 1e3,
        "forward_ms": row.forward_ms,
        "backward_ms": row.backward_ms,
        "share": row.share,
        "flops": layer.flops,
        "bytes": layer.bytes,
        "intensity": _number(layer.intensity),
        "conversions": [
            {"name": c.name, "source": c.source, "time_ms": c.dur_us / 1e3,
             "from": c.from_format.value, "to": c.to_format.value}
            for c in layer.conversions
        ],
        "kernels": list(layer.kernel_names),
        "device_kernels": _device_kernels(row.kernels),
        "achieved_gflops": None if roofline is None else roofline.achieved_flops / 1e9,
        "attainable_gflops": None if roofline is None else roofline.attainable_flops / 1e9,
        "pct_of_roofline": None if roofline is None else _number(roofline.pct_of_roofline),
        "bound": None if roofline is None else roofline.bound.value,
    }


def _outcome(outcome: FindingOutcome) -> dict[str, Any]:
    finding = outcome.finding
    candidate = finding.candidate
    return {
        "rule_id": finding.rule_id,
        "rule": finding.rule_name,
        "severity": finding.severity.value,
        "layers": list(finding.layers),
        "message": finding.message,
        "fix": finding.fix,
        "advice": finding.advice,
        "snippet": finding.snippet,
        "evidence": evidence_fields(finding.evidence),
        "estimated_saving": finding.estimated_saving,
        "saving_bound": finding.saving_bound.value,
        "predicted_speedup": finding.predicted_speedup,
        "candidate": None if candidate is None else {
            "title": candidate.title, "numerics": candidate.numerics.value, "tolerance": candidate.tolerance},
        "measurement": None if outcome.measurement is None else _measurement(
            outcome.measurement, outcome.numerics_ok, compares_outputs=outcome.architecture is None),
        "not_measured": outcome.not_measured,
        "same_candidate_as": outcome.same_candidate_as,
        "off_prediction": outcome.off_prediction,
        "architecture": None if outcome.architecture is None else _architecture(outcome.architecture),
        "larger_batches": None if finding.larger_batches is None else {
            "factors": list(finding.larger_batches.factors), "budget_s": finding.larger_batches.budget_s},
        "throughput": None if outcome.throughput is None else _throughput(outcome.throughput),
        "layer_measurements": [
            {"layer": m.layer, "input_shape": list(m.input_shape), "not_measured": m.not_measured,
             "measurement": None if m.measurement is None else _measurement(
                 m.measurement, m.numerics_ok, compares_outputs=True)}
            for m in outcome.layer_measurements],
    }


def _throughput(sweep: BatchSweep) -> dict[str, Any]:
    best = sweep.best
    return {
        "baseline_batch": sweep.baseline_batch,
        "best_batch": None if best is None else best.batch_size,
        "stopped": sweep.stopped,
        "points": [_throughput_point(point) for point in sweep.points],
    }


def _throughput_point(point: ThroughputPoint) -> dict[str, Any]:
    measurement = point.measurement
    return {
        "batch_size": point.batch_size,
        "samples_per_s": point.samples_per_s,
        "baseline_samples_per_s": point.baseline_samples_per_s,
        **_interval(measurement.estimate),
        "rounds": measurement.rounds,
        "blocks": measurement.blocks,
        "warmup_steps": list(measurement.warmup_steps),
        "threads": measurement.threads,
        "timer": measurement.timer,
        **_load(measurement),
    }


def _plan(plan: Plan) -> dict[str, Any]:
    return {
        "steps": [
            {
                "rule_id": step.finding.rule_id,
                "fix": step.finding.fix,
                "snippet": step.finding.snippet,
                "speedup": step.measurement.estimate.speedup if step.measurement else None,
                "measured_saving": step.measurement.saving,
                "estimated_saving": step.finding.estimated_saving,
                "saving_bound": step.finding.saving_bound.value,
                "predicted_speedup": step.finding.predicted_speedup,
            }
            for step in plan.steps
        ],
        "tolerance": plan.tolerance,
        "measurement": _measurement(plan.measurement, True, compares_outputs=True),
        "measured_saving": plan.measurement.saving,
        "left_out": [
            {
                "rule_id": left.outcome.finding.rule_id,
                "fix": left.outcome.finding.fix,
                "speedup_alone": left.outcome.measurement.estimate.speedup if left.outcome.measurement else None,
                "plan_speedup_with_it": left.measurement.estimate.speedup if left.measurement else None,
                "reason": left.reason,
            }
            for left in plan.left_out
        ],
    }


def _architecture(delta: ArchitectureDelta) -> dict[str, Any]:
    return {
        "needs_retraining": True,
        "flops_before": delta.before.flops,
        "flops_after": delta.after.flops,
        "flops_ratio": _number(delta.flops_ratio),
        "params_before": delta.before.params,
        "params_after": delta.after.params,
        "params_ratio": _number(delta.params_ratio),
    }


def _gradient_reference(reference: GradientReference | None) -> dict[str, Any] | None:
    if reference is None:
        return None
    return {"baseline_error": _number(reference.baseline_error), "candidate_error": _number(reference.candidate_error),
            "worst_parameter": reference.worst_parameter, "same_step": _number(reference.same_step),
            "rounding_only": reference.rounding_only}


def _interval(estimate: SpeedupEstimate) -> dict[str, Any]:
    """A speedup with its interval and verdict, as every measurement in report.json has it."""
    return {"speedup": estimate.speedup, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high,
            "confidence": CONFIDENCE, "verdict": estimate.verdict.value}


def _load(measurement: Measurement) -> dict[str, Any]:
    """Other processes' load over a measurement, and whether its verdict holds (``reliable: false``: none)."""
    contention = measurement.contention
    return {"other_cores_busy": measurement.other_cores_busy, "reliable": measurement.reliable,
            "contended_blocks": contention.contended_blocks, "redone_blocks": contention.redone_blocks,
            "busiest": contention.busiest, "stopped_early": measurement.stopped_early}


def _measurement(measurement: Measurement, numerics_ok: bool | None, *, compares_outputs: bool) -> dict[str, Any]:
    estimate, numerics = measurement.estimate, measurement.numerics
    return {
        "baseline_ms": estimate.baseline_ms,
        "candidate_ms": estimate.candidate_ms,
        **_interval(estimate),
        # An architecture change computes something else: its outputs are not compared (see "architecture").
        "max_abs_error": _number(numerics.max_abs_error) if compares_outputs else None,
        "max_rel_error": _number(numerics.max_rel_error) if compares_outputs else None,
        "max_grad_abs_error": _number(numerics.max_grad_abs_error) if compares_outputs else None,
        "max_grad_rel_error": _number(numerics.max_grad_rel_error) if compares_outputs else None,
        "gradients_vs_fp64": _gradient_reference(numerics.gradient_reference) if compares_outputs else None,
        "numerics_ok": numerics_ok,
        "rounds": measurement.rounds,
        "blocks": measurement.blocks,
        "extra_blocks": measurement.extra_blocks,
        "fresh_copies": measurement.fresh_copies,
        "warmup_steps": list(measurement.warmup_steps),
        "first_step_s": list(measurement.first_step_s),
        "threads": measurement.threads,
        "timer": measurement.timer,
        **_load(measurement),
        "peak_bytes": list(measurement.peak_bytes),
        "peak_memory": measurement.peak_memory,
    }
