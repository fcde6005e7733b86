"""Load a user's model file into a Workload, and run one training or inference step of it.

The model file contract: ``get_model()`` and ``get_inputs()`` (``get_inputs`` may take ``batch_size``), or
module-level ``model`` and ``inputs``. Inputs are a tensor, a tuple/list of tensors, or a dict of keyword
tensors. The user's objects are never modified: every Workload holds deep copies.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import importlib.util
import inspect
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import torch
from torch import nn

from convdoctor.errors import (
    ConvDoctorError,
    InputMismatchError,
    ModelFileError,
    ModelTimeoutError,
)

Inputs = Union[torch.Tensor, tuple, dict]


class Mode(str, enum.Enum):
    """What one step of the workload runs."""

    EVAL = "eval"  # forward under no_grad
    TRAIN = "train"  # forward, backward on the mean of the outputs, SGD step


@dataclass(frozen=True)
class DdpSettings:
    """How each step wraps the model in DistributedDataParallel (defaults are DDP's own), in a worker of a job.

    The process group must be initialized before a step is made.
    """

    bucket_cap_mb: float | None = None  # None: DDP's default (25 MiB, and 1 MiB for the first bucket)
    gradient_as_bucket_view: bool = False
    static_graph: bool = False
    find_unused_parameters: bool = False

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
        bucket = {} if self.bucket_cap_mb is None else {"bucket_cap_mb": self.bucket_cap_mb}
        return DistributedDataParallel(
            model, device_ids=device_ids, gradient_as_bucket_view=self.gradient_as_bucket_view,
            static_graph=self.static_graph, find_unused_parameters=self.find_unused_parameters, **bucket)


@dataclass(frozen=True)
class ModelFileCompile:
    """The compile of a model file that returned ``torch.compile(model)`` (an OptimizedModule): the workload holds a
    copy of the eager module, and ``apply`` compiles a copy the same way (the same dynamo context: backend, mode,
    options)."""

    dynamo_ctx: Callable[[nn.Module], nn.Module]

    def apply(self, workload: "Workload") -> "Workload":
        """The workload with its model compiled as the model file compiled its own."""
        return replace(workload, model=self.dynamo_ctx(workload.model))


@dataclass(frozen=True)
class Workload:
    """A model with its example inputs on a device, and what one step of it runs.

    With ``ddp`` set, each step (``make_step``) runs the model wrapped in DistributedDataParallel: the model
    itself stays the plain module, so that copies and transforms work on it as on one device.
    """

    model: nn.Module
    inputs: Inputs
    device: torch.device
    mode: Mode
    source: str = "<python>"
    input_factory: Callable[[int], Inputs] | None = None  # the model file's get_inputs(batch_size), when it has one
    ddp: DdpSettings | None = None
    # One copy serves every block of a comparison: a fresh copy would be built again at a cost that dwarfs a block
    # (torch.compile with inductor's freezing compiles each copy anew, seconds to a minute on a CPU).
    reuse_copy: bool = False
    model_file_compile: ModelFileCompile | None = None  # set when the model file returned a compiled model

    @property
    def batch_size(self) -> int | None:
        first = next(iter(flat_tensors(self.inputs)), None)
        return int(first.shape[0]) if first is not None and first.dim() > 0 else None

    @property
    def dtype(self) -> str:
        first = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        return str(first.dtype).replace("torch.", "") if first is not None else "unknown"

    def copy(self) -> "Workload":
        """A deep copy of the model and inputs, so that a transform never touches this one."""
        return replace(self, model=copy.deepcopy(self.model), inputs=copy.deepcopy(self.inputs))

    def with_batch_size(self, batch_size: int) -> "Workload":
        """A copy of this workload on fresh inputs of ``batch_size`` from its input factory (get_inputs)."""
        if self.input_factory is None:
            raise ValueError(f"{self.source}: no get_inputs(batch_size) to build inputs of another batch size")
        inputs = self.input_factory(batch_size)
        _check_inputs(inputs, self.source)
        moved = map_tensors(inputs, lambda t: t.detach().clone().to(self.device))
        return replace(self, model=copy.deepcopy(self.model), inputs=moved)


def flat_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a nested structure of tensors, tuples, lists and dicts, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flat_tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat_tensors(v)]
    return []


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The same nested structure with ``fn`` applied to each tensor."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call the model the way its inputs say: keywords for a dict, positions for a tuple/list."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def make_step(workload: Workload) -> Callable[[], Any]:
    """A function that runs one step of the workload and returns the model's output."""
    model, inputs = workload.model, workload.inputs
    if workload.mode is Mode.EVAL:
        model.eval()

        def eval_step() -> Any:
            with torch.no_grad():
                return call_model(model, inputs)

        return eval_step

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3) if params else None
    if workload.ddp is not None:
        model = workload.ddp.wrap(model, workload.device)

    def train_step() -> Any:
        output = call_model(model, inputs)
        loss = training_loss(output)
        if loss.requires_grad:
            loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return output

    return train_step


def training_loss(output: Any) -> torch.Tensor:
    """A scalar to back-propagate from any model output: the sum of the means of its float tensors."""
    floats = [t for t in flat_tensors(output) if t.is_floating_point()]
    if not floats:
        raise InputMismatchError("--mode train needs a model whose output holds a floating-point tensor")
    return sum(t.float().mean() for t in floats)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on the device, so that a timer sees the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``step`` takes, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelFileError("--device cuda asked for, but this PyTorch sees no CUDA device; use --device cpu")
    return torch.device(name)


def load_workload(
    path: str | Path, *, device: str = "auto", mode: str = "eval", batch_size: int | None = None
) -> Workload:
    """Import a model file and build a Workload from copies of its model and inputs."""
    module = import_model_file(Path(path))
    model = _entry(module, "get_model", "model", path)
    inputs = _inputs(module, path, batch_size)
    if not isinstance(model, nn.Module):
        raise ModelFileError(
            f"{path}: the model is a {type(model).__name__}, not a torch.nn.Module; return the module itself"
        )
    _check_inputs(inputs, path)
    workload = workload_from(model, inputs, device=device, mode=mode, source=str(path))
    return replace(workload, input_factory=_input_factory(module, path))


def workload_from(
    model: nn.Module, inputs: Inputs, *, device: str = "auto", mode: str = "eval", source: str = "<python>"
) -> Workload:
    """A Workload on copies of ``model`` and ``inputs``, moved to the device; the originals stay as they are.

    A compiled model (``torch.compile(model)``, an OptimizedModule) becomes a copy of its eager module and the
    compile to apply to copies of it (``ModelFileCompile``)."""
    target = resolve_device(device)
    compiled = None
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # imported already when the model was compiled
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        compiled, model = ModelFileCompile(model.dynamo_ctx), model._orig_mod
    model_copy = copy.deepcopy(model).to(target)
    inputs_copy = map_tensors(inputs, lambda t: t.detach().clone().to(target))
    return Workload(model=model_copy, inputs=inputs_copy, device=target, mode=Mode(mode), source=source,
                    model_file_compile=compiled)


def import_model_file(path: Path) -> Any:
    """Import the file under its own name from its own folder, so that it can import its neighbours."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such file; pass the path of a .py file that defines get_model()")
    if not path.is_file():
        raise ModelFileError(f"{path}: is a directory, not a model file; pass the path of a .py file")
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else f"_convdoctor_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"{path}: cannot be imported as Python; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ModelFileError(f"{path}:{exc.lineno}: syntax error: {exc.msg}; fix the file and run again") from exc
    except ImportError as exc:
        sys.modules.pop(name, None)
        missing = exc.name or str(exc)
        raise ModelFileError(
            f"{path}: import failed: {exc}; install {missing!r} in this environment or fix the import"
        ) from exc
    except BaseException as exc:  # the user's module-level code may raise anything, SystemExit included
        sys.modules.pop(name, None)
        if isinstance(exc, (KeyboardInterrupt, ConvDoctorError)):  # Ctrl-C, a --timeout, a refused os._exit
            raise
        raise ModelFileError(f"{path}: raised while importing: {describe_exception(exc)}") from exc
    return module


def _entry(module: Any, function: str, attribute: str, path: str | Path) -> Any:
    if hasattr(module, function):
        factory = getattr(module, function)
        return _call_user(factory, path, function)
    if hasattr(module, attribute):
        return getattr(module, attribute)
    raise ModelFileError(
        f"{path}: defines neither {function}() nor a module-level {attribute!r}; add one of them"
    )


def _inputs(module: Any, path: str | Path, batch_size: int | None) -> Any:
    if hasattr(module, "get_inputs"):
        factory = module.get_inputs
        takes_batch = "batch_size" in inspect.signature(factory).parameters
        if batch_size is not None and not takes_batch:
            raise ModelFileError(f"{path}: --batch-size needs get_inputs(batch_size); add that parameter")
        args = {"batch_size": batch_size} if takes_batch and batch_size is not None else {}
        return _call_user(factory, path, "get_inputs", **args)
    if batch_size is not None and hasattr(module, "inputs"):
        raise ModelFileError(f"{path}: --batch-size needs get_inputs(batch_size) instead of module-level inputs")
    return _entry(module, "get_inputs", "inputs", path)


def _input_factory(module: Any, path: str | Path) -> Callable[[int], Inputs] | None:
    """``get_inputs(batch_size)`` of the model file, wrapped so that its errors read as the user's; else None."""
    factory = getattr(module, "get_inputs", None)
    if factory is None or "batch_size" not in inspect.signature(factory).parameters:
        return None
    return lambda batch_size: _call_user(factory, path, "get_inputs", batch_size=batch_size)


def _call_user(fn: Callable[..., Any], path: str | Path, name: str, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except ConvDoctorError:
        raise
    except (Exception, SystemExit) as exc:  # user code may call sys.exit(); that must not end convdoctor silently
        raise ModelFileError(f"{path}: {name}() raised {describe_exception(exc)}") from exc


TIMEOUT_ADVICE = "if the model is just slow, pass a larger --timeout (or a smaller --batch-size)"


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str, advice: str = TIMEOUT_ADVICE) -> Iterator[None]:
    """Raise ModelTimeoutError when the block runs longer than ``seconds`` (main thread, Unix; else no limit).

    Python code is interrupted at once; a single long native op is interrupted when it returns.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    usable = seconds is not None and seconds > 0 and hasattr(signal, "setitimer") and main_thread
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ModelTimeoutError(f"{what} did not finish within {seconds:g} s; {advice}")

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if time.perf_counter() - started > seconds:  # the alarm went off where its exception was swallowed (a callback)
        expire(signal.SIGALRM, None)


def _check_inputs(inputs: Any, path: str | Path) -> None:
    ok = (
        isinstance(inputs, torch.Tensor)
        or (isinstance(inputs, (tuple, list)) and len(inputs) > 0 and all(isinstance(t, torch.Tensor) for t in inputs))
        or (isinstance(inputs, dict) and len(inputs) > 0
            and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in inputs.items()))
    )
    if not ok:
        raise ModelFileError(
            f"{path}: inputs are a {type(inputs).__name__}; give a tensor, a tuple/list of tensors, "
            "or a dict of keyword tensors"
        )


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line)`` of an exception from user code, in one line, without the traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


@contextlib.contextmanager
def process_exit_guard() -> Iterator[None]:
    """Turn ``os._exit()`` called by the user's code in this process into ModelFileError.

    ``os._exit`` skips every handler, so a model calling it would end convdoctor with the model's exit code and
    no word. Child processes (forked DataLoader workers, launchers) keep the real ``os._exit``.
    """
    real_exit, pid = os._exit, os.getpid()

    def refuse(status: int) -> None:
        if os.getpid() != pid:
            real_exit(status)
        raise ModelFileError(f"the model called os._exit({status}), which would end convdoctor; remove that call "
                             "from the code that builds or runs the model")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real_exit
