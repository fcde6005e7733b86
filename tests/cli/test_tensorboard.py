"""The traces convdoctor writes open in a real TensorBoard with the PyTorch Profiler plugin (torch-tb-profiler).

A TensorBoard server is started on 127.0.0.1 (port 0: the OS picks a free one, TensorBoard prints it) on the log dir
of the real small_cnn profile, and the plugin's HTTP API, which its web page calls, is asked for the run, its
workers and spans, and the Overview, Operator, operator-tree and Trace data. Numbers are checked against
report.json. A second server reads the shared ResNet-50 GPU trace, to exercise the plugin's GPU views (Kernel,
Memory), whose kernel statistics go through pandas.

Servers run in their own process group and are always stopped; their log must hold no failure.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_TRACES
from tensorboard_server import START_TIMEOUT, TensorBoard, tensorboard

PLUGIN = "/data/plugin/pytorch_profiler"
LOG_FAILURES = re.compile(r"Traceback|Failed to|Exception|ERROR|^E\d{4}", re.MULTILINE)
CONV_IMPLEMENTATIONS = {"aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d",
                        "aten::_nnpack_spatial_convolution", "aten::cudnn_convolution", "aten::miopen_convolution"}


def wait_for_run(server: TensorBoard, run: str) -> list[str]:
    """Poll the plugin until it has loaded RUN (it scans and parses log dirs in the background)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        listing = server.json(PLUGIN + "/runs")
        if run in listing["runs"] and not listing["loading"]:
            return listing["runs"]
        assert time.monotonic() < deadline, f"the plugin did not load {run} in {START_TIMEOUT} s: {listing}\n" \
                                            f"{server.log_text()[-3000:]}"
        time.sleep(0.3)


# ------------------------------------------------------------------------------------- small_cnn, on CPU


@pytest.fixture(scope="module")
def small_cnn_board(small_cnn_run, tmp_path_factory):
    """TensorBoard on the small_cnn run's log dir, its run loaded: (server, run, worker, span, report)."""
    out, report, _ = small_cnn_run
    trace = Path(report["trace_files"][0])
    run, worker = trace.parent.name, trace.name.split(".")[0]
    assert trace.parent.parent == out / "tb"
    with tensorboard(out / "tb", tmp_path_factory.mktemp("tensorboard")) as server:
        wait_for_run(server, run)
        spans = server.json(PLUGIN + "/spans", run=run, worker=worker)
        assert spans, "the plugin found no span for the worker"
        yield server, run, worker, spans[0], report


def test_plugin_lists_our_run_worker_and_views(small_cnn_board):
    server, run, worker, span, _ = small_cnn_board
    listing = server.json("/data/plugins_listing")
    assert listing["pytorch_profiler"]["enabled"], listing["pytorch_profiler"]
    assert server.json(PLUGIN + "/runs")["runs"] == [run]  # nothing else (no scratch folder) looks like a run
    views = server.json(PLUGIN + "/views", run=run)
    assert {"Overview", "Operator", "Trace"} <= set(views), views
    for view in views:
        assert server.json(PLUGIN + "/workers", run=run, view=view) == [worker], view
    assert server.json(PLUGIN + "/spans", run=run, worker=worker) == [span]
    status, body, _ = server.get(PLUGIN + "/index.js")  # the plugin's page loads from the server itself
    assert status == 200 and body


def test_overview_has_our_steps_and_step_time(small_cnn_board):
    server, run, worker, span, report = small_cnn_board
    overview = server.json(PLUGIN + "/overview", run=run, worker=worker, span=span)
    steps = overview["steps"]
    assert [c.get("name") for c in steps["columns"]][0] == "Step"
    assert len(steps["rows"]) == report["workload"]["steps"]
    for row in steps["rows"]:
        assert sum(v for v in row[1:] if isinstance(v, (int, float))) > 0, row
    average = overview["performance"][0]
    assert average["name"] == "Average Step Time"
    assert average["value"] / 1000 == pytest.approx(report["summary"]["step_time_ms"], rel=0.05)
    environment = {e["title"]: e["value"] for e in overview["environments"]}
    assert environment["Number of Worker(s)"] == "1"
    assert environment["Device Type"] == ("GPU" if report["workload"]["device"].startswith("cuda") else "CPU")


def test_operator_view_agrees_with_report_json(small_cnn_board):
    """The convolutions the plugin counts and times are the ones convdoctor reported: calls per (input, weight)
    shape, and total time per step."""
    server, run, worker, span, report = small_cnn_board
    steps = report["workload"]["steps"]
    pie = server.json(PLUGIN + "/operation", run=run, worker=worker, span=span, group_by="Operation")
    host_total = dict(pie["host_total_time"]["rows"])
    assert host_total["aten::conv2d"] > 0
    assert CONV_IMPLEMENTATIONS & set(host_total), sorted(host_total)
    assert host_total["aten::conv2d"] / steps / 1000 == pytest.approx(report["summary"]["conv_time_ms"], rel=0.05)

    table = server.json(PLUGIN + "/operation/table", run=run, worker=worker, span=span, group_by="Operation")
    conv2d = {row["name"]: row for row in table["data"]}["aten::conv2d"]
    assert conv2d["calls"] == len(report["layers"]) * steps

    by_shape = server.json(PLUGIN + "/operation/table", run=run, worker=worker, span=span,
                           group_by="OperationAndInputShape")
    plugin_calls = Counter()
    for row in by_shape["data"]:
        if row["name"] == "aten::conv2d":
            inputs = json.loads(row["input_shape"])
            plugin_calls[json.dumps(inputs[:2])] += row["calls"]
    report_calls = Counter()
    for layer in report["layers"]:
        report_calls[json.dumps([layer["input_shape"], layer["weight_shape"]])] += layer["calls"]
    assert plugin_calls == report_calls


def test_operator_tree_and_trace_view(small_cnn_board):
    """The operator tree has one node per profiled step, and the Trace view serves our trace with the module scopes
    convdoctor recorded, one per conv layer and step."""
    server, run, worker, span, report = small_cnn_board
    steps = report["workload"]["steps"]
    tree = server.json(PLUGIN + "/tree", run=run, worker=worker, span=span)
    step_nodes = [node for node in tree["children"] if node["name"].startswith("ProfilerStep#")]
    assert len(step_nodes) == steps
    assert all(node["end_time"] > node["start_time"] for node in step_nodes)

    trace = server.json(PLUGIN + "/trace", run=run, worker=worker, span=span)
    names = Counter(event.get("name") for event in trace["traceEvents"])
    for layer in report["layers"]:
        assert names[f"module::{layer['module_class']}::{layer['name']}"] == steps, layer["name"]
    assert names["aten::conv2d"] == len(report["layers"]) * steps


def test_server_log_is_clean(small_cnn_board):
    """After all the requests above, the plugin logged no failure (parsing problems go to the log, not to HTTP)."""
    server, run, _, _, _ = small_cnn_board
    log = server.log_text()
    assert f"Run {run} loaded" in log
    assert not LOG_FAILURES.search(log), log[-4000:]


# ------------------------------------------------------------------------------- shared ResNet-50 GPU trace


@pytest.mark.slow
@pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)
def test_gpu_views_load_on_the_shared_resnet50_trace(tmp_path):
    """The plugin's GPU-only views work on this install: Kernel (its statistics go through pandas, pinned <3 for
    this plugin) and Memory, on the V100 ResNet-50 trace in tests/data."""
    logdir = tmp_path / "logdir"
    run_dir = logdir / "resnet50_v100"
    run_dir.mkdir(parents=True)
    shutil.copy(SHARED_TRACES["resnet50"], run_dir / "worker0.1623143089861.pt.trace.json.gz")
    with tensorboard(logdir, tmp_path) as server:
        wait_for_run(server, "resnet50_v100")
        views = server.json(PLUGIN + "/views", run="resnet50_v100")
        assert {"Overview", "Operator", "Kernel", "Trace", "Memory"} <= set(views), views
        (span, *_) = server.json(PLUGIN + "/spans", run="resnet50_v100", worker="worker0")
        query = dict(run="resnet50_v100", worker="worker0", span=span)

        kernels = dict(server.json(PLUGIN + "/kernel", **query)["total"]["rows"])
        assert any("cudnn" in name for name in kernels) and all(v >= 0 for v in kernels.values())
        table = server.json(PLUGIN + "/kernel/table", group_by="Kernel", **query)["data"]
        columns = [c["name"] for c in table["columns"]]
        calls = columns.index("Calls")
        assert table["rows"] and all(row[calls] > 0 for row in table["rows"])
        assert server.json(PLUGIN + "/kernel/table", **query)["data"]["rows"]  # grouped by kernel and operator
        tensor_cores = dict(server.json(PLUGIN + "/kernel/tc_pie", **query)["total"]["rows"])
        assert sum(tensor_cores.values()) == pytest.approx(1.0)

        overview = server.json(PLUGIN + "/overview", **query)
        assert {e["title"]: e["value"] for e in overview["environments"]}["Device Type"] == "GPU"
        assert overview["performance"][0]["value"] > 0
        operators = dict(server.json(PLUGIN + "/operation", group_by="Operation", **query)["device_total_time"]["rows"])
        assert operators["aten::cudnn_convolution"] > 0
        memory = server.json(PLUGIN + "/memory", **query)
        assert memory["rows"], memory.keys()
        log = server.log_text()
        assert not LOG_FAILURES.search(log), log[-4000:]
