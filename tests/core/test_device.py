"""Device decisions, the CUDA ones included, checked on the CPU by faking the device's capabilities."""

import os
import warnings

import pytest
import torch

from pipeline.core import device
from pipeline.core.device import (
    Capabilities,
    autocast,
    choose_compile,
    choose_device,
    choose_precision,
    choose_threads,
    configure_backends,
    cpu_flags,
    decide,
    memory_format,
    needs_grad_scaler,
    peak_memory_mib,
    usable_cpus,
)
from pipeline.core.errors import UserError

T4 = Capabilities("cuda", (7, 5))  # Turing: fp16 tensor cores, bf16 only emulated
A100 = Capabilities("cuda", (8, 0))
H100 = Capabilities("cuda", (9, 0))
ZEN4 = Capabilities("cpu", cpu_flags=frozenset({"avx512f", "avx512_bf16"}))
SAPPHIRE_RAPIDS = Capabilities("cpu", cpu_flags=frozenset({"avx512f", "amx_bf16", "amx_tile"}))
OLD_CPU = Capabilities("cpu", cpu_flags=frozenset({"avx2", "fma"}))


@pytest.mark.parametrize(
    ("caps", "dtype", "scaler"),
    [
        (T4, torch.float16, True),
        (A100, torch.bfloat16, False),
        (H100, torch.bfloat16, False),
        (ZEN4, torch.bfloat16, False),
        (SAPPHIRE_RAPIDS, torch.bfloat16, False),
        (OLD_CPU, None, False),
    ],
)
def test_auto_precision_is_bf16_where_native_fp16_on_older_gpus_else_fp32(caps, dtype, scaler):
    choice = choose_precision("auto", caps)
    assert choice.value is dtype and needs_grad_scaler(choice.value) is scaler
    assert choice.why.startswith("precision: ") and "auto" in choice.why


def test_asked_precisions_are_taken_and_fp16_needs_cuda():
    assert choose_precision("fp32", H100).value is None
    assert choose_precision("bf16", T4).value is torch.bfloat16 and "emulated" in choose_precision("bf16", T4).why
    assert "native" in choose_precision("bf16", ZEN4).why
    assert choose_precision("fp16", A100).value is torch.float16
    with pytest.raises(UserError, match="^precision: fp16 needs a CUDA GPU"):
        choose_precision("fp16", ZEN4)


@pytest.mark.parametrize(
    ("asked", "device_type", "on", "why"),
    [
        ("auto", "cuda", True, "compile: on (auto: a CUDA step is bound by kernel launches)"),
        ("auto", "cpu", False, "compile: off (auto: on a cpu it costs more time than it saves)"),
        (True, "cpu", True, "compile: on (asked)"),
        (False, "cuda", False, "compile: off (asked)"),
    ],
)
def test_compile_auto_is_on_for_cuda_only_and_asked_values_are_taken(asked, device_type, on, why):
    choice = choose_compile(asked, device_type)
    assert choice.value is on and choice.why == why


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_threads_auto_keeps_torchs_default_and_a_count_is_taken():
    assert choose_threads("auto") is None
    assert choose_threads(1) == 1


def test_cuda_asked_without_a_usable_gpu_fails_in_one_line_and_auto_falls_back_saying_why(monkeypatch):
    monkeypatch.setattr(device, "cuda_problem", lambda: "no CUDA GPU is visible to PyTorch")
    with pytest.raises(UserError) as err:
        choose_device("cuda")
    assert str(err.value) == (
        "params.yaml: device cuda: CUDA is unusable (no CUDA GPU is visible to PyTorch); "
        "fix that, or ask for cpu or auto"
    )
    assert "\n" not in str(err.value)
    auto = choose_device("auto")
    assert auto.value == torch.device("cpu") and auto.why == "device: cpu (auto: no CUDA GPU is visible to PyTorch)"
    assert choose_device("cpu").why == "device: cpu (asked)"


def test_a_driver_too_old_is_named_from_cudas_own_warning(monkeypatch):
    def unavailable():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).", stacklevel=1
        )
        return False

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    assert device.cuda_problem().startswith("CUDA initialization: The NVIDIA driver on your system is too old")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.cuda_problem() == "no CUDA GPU is visible to PyTorch"
    monkeypatch.setattr(torch.version, "cuda", None)
    assert device.cuda_problem() == "this PyTorch build has no CUDA"


def test_a_failing_first_cuda_call_is_a_problem_not_a_traceback(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def zeros(*args, device=None, **kwargs):
        raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable\nmore lines")

    monkeypatch.setattr(torch, "zeros", zeros)
    problem = device.cuda_problem()
    assert problem == "its first call failed: CUDA error: all CUDA-capable devices are busy or unavailable"


def test_decide_on_this_cpu_sets_the_threads_and_says_each_choice(monkeypatch):
    monkeypatch.setattr(device, "cuda_problem", lambda: "no CUDA GPU is visible to PyTorch")
    threads = torch.get_num_threads()
    try:
        compute, said = decide("auto", "fp32", 1)
        assert compute.device == torch.device("cpu") and compute.dtype is None and compute.precision == "fp32"
        assert torch.get_num_threads() == 1
        assert said == [
            "device: cpu (auto: no CUDA GPU is visible to PyTorch)",
            "precision: fp32 (asked)",
            "threads: 1 (asked)",
        ]
    finally:
        torch.set_num_threads(threads)


def test_autocast_casts_only_when_a_dtype_is_given():
    a = torch.randn(4, 4)
    with autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype is torch.bfloat16
    with autocast("cpu", None):
        assert (a @ a).dtype is torch.float32


def test_channels_last_everywhere():
    assert memory_format("cuda") is torch.channels_last
    assert memory_format("cpu") is torch.channels_last


def test_tf32_and_cudnn_benchmark_only_on_cuda():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        configure_backends("cpu", fixed_size=True)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.benchmark
        configure_backends("cuda", fixed_size=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
        configure_backends("cuda", fixed_size=False)  # sizes that vary would re-benchmark every batch
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_no_peak_memory_off_cuda():
    assert peak_memory_mib(torch.device("cpu")) is None


def test_usable_cpus_are_the_affinity_mask_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3}, raising=False)
    assert usable_cpus() == 2
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS and Windows have no affinity call
    assert usable_cpus() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown
    assert usable_cpus() == 1
