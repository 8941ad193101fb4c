"""Device decisions for training: mixed precision, memory format, TF32, peak memory.

Each decision is a small function of the device type (and of what the GPU supports), so tests run
the CUDA branches on a CPU machine; the training loop only calls these.
"""

import contextlib

import torch


def select_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for training on ``device_type``, or None for full fp32.

    bfloat16 where the GPU supports it (Ampere and later): fp32's exponent range, so no loss
    scaling is needed. float16 on older GPUs, with a grad scaler (:func:`needs_grad_scaler`). None
    on the CPU, where autocast would trade accuracy for little speed and change today's results.
    """
    if device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


def device_amp_dtype(device: torch.device) -> torch.dtype | None:
    """:func:`amp_dtype` for ``device``, asking CUDA whether it supports bf16."""
    return amp_dtype(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """Only fp16 needs loss scaling: its gradients underflow below 6e-8 (Micikevicius et al. 2018)."""
    return dtype == torch.float16


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def memory_format(device_type: str) -> torch.memory_format:
    """channels_last (NHWC) on CUDA, where cuDNN's tensor-core convolutions want it; else NCHW."""
    return torch.channels_last if device_type == "cuda" else torch.contiguous_format


def configure_backends(device_type: str) -> None:
    """Allow TF32 matmuls and cuDNN convolutions on CUDA (10-bit mantissa, ~fp16 speed on Ampere+).

    A no-op on other devices. TF32 is off by default for matmuls since PyTorch 1.12.
    """
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak memory allocated by tensors on a CUDA ``device`` since the last reset, in MiB; None elsewhere.

    Resets the peak, so each call measures the interval since the previous one.
    """
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak
