"""Device decisions: which device, which precision, which memory format, how many CPU threads.

Each decision is a small function of a :class:`Capabilities` record (device type, CUDA compute
capability, the CPU's instruction-set flags), so tests run every branch on a CPU machine by faking
the record; the stages only call :func:`probe` and these functions.
"""

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.errors import UserError, first_line

# CPU flags (/proc/cpuinfo) of instructions that compute bfloat16 dot products natively: AVX512-BF16
# (Intel Cooper Lake, AMD Zen 4 and later) and AMX (Intel Sapphire Rapids and later).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 tensor cores arrived with Ampere, compute capability 8.0 (NVIDIA's CUDA C Programming Guide).
BF16_CUDA_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Capabilities:
    """What the decisions depend on: ``type`` "cuda" or "cpu"; ``cuda_capability`` (major, minor) of
    the GPU (None on a CPU); ``cpu_flags``, the instruction-set flags of the CPU."""

    type: str
    cuda_capability: tuple[int, int] | None = None
    cpu_flags: frozenset[str] = frozenset()

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 matrix products run in hardware here, not emulated in fp32."""
        if self.type == "cuda":
            return self.cuda_capability is not None and self.cuda_capability >= BF16_CUDA_CAPABILITY
        return any(flag in self.cpu_flags for flag in BF16_CPU_FLAGS)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (Linux); empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@dataclass(frozen=True)
class Choice:
    """A decision and one line saying why (printed by the stage)."""

    value: object
    why: str


def choose_device(requested: str, option: str = "params.yaml: device") -> Choice:
    """The torch device for a device setting: "cpu", "cuda" (fail if unusable) or "auto" (CUDA when
    usable, else the CPU). ``why`` names the device and, for auto, the reason.

    Raises UserError in one line, naming ``option`` (where the setting came from), when "cuda" is
    asked and CUDA is unusable: a PyTorch without CUDA, no GPU visible, a driver too old for this
    PyTorch build, or a first CUDA call that fails.
    """
    if requested == "cpu":
        return Choice(torch.device("cpu"), "device: cpu (asked)")
    problem = cuda_problem()
    if problem is None:
        name = torch.cuda.get_device_name(0)
        return Choice(torch.device("cuda"), f"device: cuda ({name}; {'asked' if requested == 'cuda' else 'auto'})")
    if requested == "cuda":
        raise UserError(f"{option} cuda: CUDA is unusable ({problem}); fix that, or ask for cpu or auto")
    return Choice(torch.device("cpu"), f"device: cpu (auto: {problem})")


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, in a few words, or None when it can: no CUDA in this PyTorch build,
    an initialisation warning (e.g. a driver older than the build), no GPU, or a first call that fails."""
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        said = [first_line(w.message) for w in caught if "CUDA" in str(w.message)]
        return said[0] if said else "no CUDA GPU is visible to PyTorch"
    try:
        torch.zeros(1, device="cuda").item()
    except RuntimeError as err:  # a busy, lost or broken GPU fails its first real call
        return f"its first call failed: {first_line(err)}"
    return None


def probe(device: torch.device) -> Capabilities:
    """The :class:`Capabilities` of ``device`` on this machine."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return Capabilities(device.type, capability, cpu_flags())


def choose_precision(requested: str, caps: Capabilities) -> Choice:
    """The autocast dtype (``value``: torch.bfloat16, torch.float16, or None for fp32) for the
    ``precision`` param on a device of ``caps``.

    "auto": bf16 where the device computes it natively (CUDA compute capability 8.0+, a CPU with
    AVX512-BF16 or AMX): fp32's exponent range, so no loss scaling; fp16 with a grad scaler on older
    CUDA GPUs (tensor cores since Volta); fp32 elsewhere. "bf16" and "fp32" are taken as asked
    (bf16 where it is emulated runs, slowly). Raises UserError for "fp16" off CUDA: PyTorch's CPU
    kernels have no fp16 path worth taking.
    """
    if requested == "fp32":
        return Choice(None, "precision: fp32 (asked)")
    if requested == "bf16":
        native = "native" if caps.native_bf16 else "emulated on this device: slow"
        return Choice(torch.bfloat16, f"precision: bf16 (asked; {native})")
    if requested == "fp16":
        if caps.type != "cuda":
            raise UserError("precision: fp16 needs a CUDA GPU; use bf16, fp32 or auto on this device")
        return Choice(torch.float16, "precision: fp16 with loss scaling (asked)")
    if caps.native_bf16:
        where = f"sm{caps.cuda_capability[0]}{caps.cuda_capability[1]}" if caps.type == "cuda" else "AVX512-BF16/AMX"
        return Choice(torch.bfloat16, f"precision: bf16 (auto: native on this {caps.type}, {where})")
    if caps.type == "cuda":
        major, minor = caps.cuda_capability
        return Choice(torch.float16, f"precision: fp16 with loss scaling (auto: sm{major}{minor} has no native bf16)")
    return Choice(None, "precision: fp32 (auto: this CPU has no native bf16)")


def precision_name(dtype: torch.dtype | None) -> str:
    """ "bf16", "fp16" or "fp32" for an autocast dtype (None = fp32), as the ``precision`` param spells it."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (Linux; what ``taskset``, ``docker --cpuset-cpus``
    and Slurm restrict), not every CPU of the machine as ``os.cpu_count()`` counts them. Where the OS has
    no affinity call (macOS, Windows) ``os.cpu_count()``, and 1 when even that is unknown. A cgroup CPU
    quota (``docker --cpus``) is not an affinity and is not seen."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_threads(requested: int | str) -> int | None:
    """The intra-op thread count to set for the ``threads`` param on a CPU: the count asked, or None for
    "auto", which keeps torch's own default (one per physical core, or ``OMP_NUM_THREADS`` when set).

    Measured on 2 cores (bench/threads.py, docs/performance.md): 2 threads train 1.6x as fast as 1 on
    quiet cores, but at half the speed of 1 when another job keeps a core busy, its OpenMP threads
    waiting for each other. Where several trainings share the cores (a DVC queue with ``-j``), set
    ``threads`` to the cores each one has.
    """
    return None if requested == "auto" else int(requested)


def choose_compile(requested: bool | str, device_type: str) -> Choice:
    """Whether to ``torch.compile`` the model (``value``: bool; inductor, default mode) for the ``compile``
    param on a ``device_type`` ("cuda" or "cpu") device.

    true and false are taken as asked. "auto" is on for CUDA: there a training step of these models at
    batch 16 is bound by the host, which launches ~600 eager kernels a step (3-6 ms against ~2.3 ms of GPU
    work for the ResNet34-UNet), and inductor fuses the element-wise kernels between the convolutions
    into fewer launches. It is off on a CPU: bench/compile.py measured a compile time there that a
    README CPU run (40 epochs x 40 steps) does not earn back (docs/performance.md#torchcompile), and it
    keeps the test suite's tiny trainings from compiling. CUDA graphs (``mode="reduce-overhead"``) would
    cut the launches further but are not used: no test of the training step under them can run here.
    """
    if requested != "auto":
        return Choice(bool(requested), f"compile: {'on' if requested else 'off'} (asked)")
    if device_type == "cuda":
        return Choice(True, "compile: on (auto: a CUDA step is bound by kernel launches)")
    return Choice(False, f"compile: off (auto: on a {device_type} it costs more time than it saves)")


@dataclass(frozen=True)
class Compute:
    """What a run computes with: ``device``, and ``dtype`` for autocast (None = fp32)."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype | None = None

    @property
    def precision(self) -> str:
        """The precision's name as the ``precision`` param spells it ("bf16", "fp16", "fp32")."""
        return precision_name(self.dtype)


def decide(device: str, precision: str, threads: int | str) -> tuple[Compute, list[str]]:
    """The :class:`Compute` for the ``device``, ``precision`` and ``threads`` params on this machine,
    and the lines saying what was chosen and why. On a CPU it also sets torch's intra-op thread count.
    Raises UserError as :func:`choose_device` and :func:`choose_precision`."""
    where = choose_device(device)
    caps = probe(where.value)
    how = choose_precision(precision, caps)
    said = [where.why, how.why]
    if caps.type == "cpu":
        count = choose_threads(threads)
        if count is not None:
            torch.set_num_threads(count)
        source = "asked" if count is not None else "auto: torch's default"
        said.append(f"threads: {torch.get_num_threads()} ({source})")
    return Compute(where.value, how.value), said


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """Only fp16 needs loss scaling: its gradients underflow below 6e-8 (Micikevicius et al. 2018)."""
    return dtype == torch.float16


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def memory_format(device_type: str) -> torch.memory_format:
    """channels_last (NHWC) for the convolutions on every device: cuDNN's tensor cores want it, and on
    the CPU oneDNN's convolutions run a training step faster with it (docs/performance.md)."""
    return torch.channels_last


def configure_backends(device_type: str, fixed_size: bool) -> None:
    """On CUDA: allow TF32 matmuls and cuDNN convolutions (10-bit mantissa, ~fp16 speed on Ampere+;
    off by default for matmuls since PyTorch 1.12), and let cuDNN benchmark its convolution
    algorithms when every batch has one size (``fixed_size``: training's square crops), which it then
    reuses. A no-op on other devices."""
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = fixed_size


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak memory allocated by tensors on a CUDA ``device`` since the last reset, in MiB; None elsewhere.

    Resets the peak, so each call measures the interval since the previous one.
    """
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak
