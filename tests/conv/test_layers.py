"""Conv-layer attribution on traces recorded here: names, shapes, FLOPs against FlopCounterMode, formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import MODELS
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convdoctor.analyzer.capture.recording import capture
from convdoctor.analyzer.capture.workload import load_workload, workload_from
from convdoctor.analyzer.conv.layers import MemoryFormat, analyze_convs, memory_format
from convdoctor.analyzer.trace.reader import load_profile


class ManyConvs(nn.Module):
    """One of each conv flavour the layer stage must get right."""

    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2, bias=False)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 5, padding=2, groups=32)
        self.transposed = nn.ConvTranspose2d(32, 8, 3, stride=2, padding=1, output_padding=1)
        self.temporal = nn.Conv1d(8, 4, 5)
        self.volumetric = nn.Conv3d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.transposed(self.depthwise(self.grouped(self.dilated(self.strided(x)))))
        return self.temporal(y.flatten(2)), self.volumetric(clip)


def _analysis(model: nn.Module, inputs, tmp_path: Path, mode: str = "eval"):
    workload = workload_from(model, inputs, device="cpu", mode=mode)
    traces = capture(workload, tmp_path / "tb", "run", steps=2)
    return analyze_convs(load_profile(traces[0]))


@pytest.fixture(scope="module")
def many_convs(tmp_path_factory):
    torch.manual_seed(0)
    model = ManyConvs()
    inputs = (torch.randn(2, 3, 32, 32), torch.randn(1, 2, 4, 8, 8))
    return model, inputs, _analysis(model, inputs, tmp_path_factory.mktemp("many"))


def test_layers_are_named_by_qualified_module_name(many_convs):
    model, _, analysis = many_convs
    conv_names = {name for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                                                            nn.ConvTranspose2d))}
    assert {layer.name for layer in analysis.layers} == conv_names
    assert all(layer.calls == 2 and layer.calls_per_step == 1 for layer in analysis.layers)


def test_shapes_and_flops_match_what_torch_computes(many_convs):
    model, inputs, analysis = many_convs
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
             for name, m in model.named_modules() if name]
    with torch.no_grad():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    for layer in analysis.layers:
        module = model.get_submodule(layer.name)
        x, out = seen[layer.name]
        assert layer.input_shape == list(x.shape)
        assert layer.weight_shape == list(module.weight.shape)
        assert layer.output_shape == list(out.shape), layer.name
        assert layer.groups == module.groups
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(x)
        assert layer.flops == counter.get_total_flops(), layer.name
        element = 4
        bias = module.bias.numel() if module.bias is not None else 0
        assert layer.bytes == (x.numel() + module.weight.numel() + out.numel() + bias) * element
        assert layer.intensity == pytest.approx(layer.flops / layer.bytes)
    ops = {layer.name: layer.op for layer in analysis.layers}
    assert ops["temporal"] == "conv1d" and ops["volumetric"] == "conv3d"
    assert ops["transposed"] == "conv_transpose2d" and ops["strided"] == "conv2d"


def test_train_mode_charges_backward_to_each_layer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    analysis = _analysis(model, torch.randn(2, 3, 16, 16), tmp_path, mode="train")
    assert sorted(layer.name for layer in analysis.layers) == ["0", "2"]
    assert all(layer.backward_us > 0 and layer.forward_us > 0 for layer in analysis.layers)


def test_layout_flip_is_detected_and_charged_to_the_conv_it_feeds(tmp_path):
    workload = load_workload(MODELS / "layout_flip.py", device="cpu")
    analysis = analyze_convs(load_profile(capture(workload, tmp_path / "tb", "run", steps=2)[0]))
    layers = {layer.name: layer for layer in analysis.layers}
    assert layers["conv_a"].memory_format is MemoryFormat.CHANNELS_LAST
    assert layers["conv_b"].memory_format is MemoryFormat.CONTIGUOUS
    assert layers["conv_a"].conversions == []
    directions = sorted((c.from_format.value, c.to_format.value) for c in layers["conv_b"].conversions)
    # Per profiled step: the model's .contiguous() (NHWC -> NCHW) feeding conv_b, then, because conv_b's weight is
    # channels_last, oneDNN's copy of the input back to NHWC inside conv_b: the ping-pong a user should see.
    assert directions == [("channels_last", "contiguous")] * 2 + [("contiguous", "channels_last")] * 2
    assert all(c.name == "aten::copy_" and c.shape == [2, 16, 32, 32] for c in layers["conv_b"].conversions)
    assert analysis.conversion_time_us > 0


@pytest.mark.parametrize("shape, fmt, expected", [
    ([2, 3, 8, 8], torch.contiguous_format, MemoryFormat.CONTIGUOUS),
    ([2, 3, 8, 8], torch.channels_last, MemoryFormat.CHANNELS_LAST),
    ([2, 3, 4, 8, 8], torch.channels_last_3d, MemoryFormat.CHANNELS_LAST),
    ([2, 1, 8, 8], torch.channels_last, MemoryFormat.CONTIGUOUS),  # one channel: both fit, contiguous wins
])
def test_memory_format_from_strides(shape, fmt, expected):
    tensor = torch.empty(shape).contiguous(memory_format=fmt)
    assert memory_format(list(tensor.shape), list(tensor.stride())) is expected


def test_memory_format_of_a_transposed_view_is_other():
    tensor = torch.empty(2, 3, 8, 8).transpose(2, 3)
    assert memory_format(list(tensor.shape), list(tensor.stride())) is MemoryFormat.OTHER


def test_a_saving_is_a_share_of_the_unprofiled_step_and_never_more_than_the_traced_step(seed_conv):
    """Predictions are over the step timed without the profiler; a traced time longer than that whole step (layers
    slowed by other processes at capture) is read against the traced step instead, so no prediction passes 100%."""
    _, analysis = seed_conv
    unprofiled = analysis.unprofiled_step_us
    assert unprofiled is not None and analysis.step_time_us > 0
    assert analysis.saving_share(unprofiled / 2) == pytest.approx(0.5)
    assert analysis.saving_share(-unprofiled / 2) == pytest.approx(-0.5)  # a predicted cost
    inflated = 1.5 * unprofiled
    assert analysis.saving_share(inflated) == pytest.approx(inflated / analysis.step_time_us)
