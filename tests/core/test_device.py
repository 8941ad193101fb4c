"""Device decisions, including the CUDA ones, checked on the CPU."""

import torch

from pipeline.core.device import (
    amp_dtype,
    autocast,
    configure_backends,
    memory_format,
    needs_grad_scaler,
    peak_memory_mib,
)


def test_bf16_where_supported_else_fp16_with_a_scaler_and_fp32_on_cpu():
    assert amp_dtype("cuda", bf16_supported=True) is torch.bfloat16
    assert amp_dtype("cuda", bf16_supported=False) is torch.float16
    assert amp_dtype("cpu", bf16_supported=True) is None
    assert needs_grad_scaler(torch.float16)
    assert not needs_grad_scaler(torch.bfloat16) and not needs_grad_scaler(None)


def test_autocast_casts_only_when_a_dtype_is_given():
    a = torch.randn(4, 4)
    with autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype is torch.bfloat16
    with autocast("cpu", None):
        assert (a @ a).dtype is torch.float32


def test_channels_last_only_on_cuda():
    assert memory_format("cuda") is torch.channels_last
    assert memory_format("cpu") is torch.contiguous_format


def test_tf32_is_switched_on_for_cuda_only():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        configure_backends("cpu")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        configure_backends("cuda")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_no_peak_memory_off_cuda():
    assert peak_memory_mib(torch.device("cpu")) is None
