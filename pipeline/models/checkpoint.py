"""The checkpoint file the training stages write and everything downstream reads."""

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import UserError, first_line
from pipeline.core.io import atomic_path
from pipeline.models.registry import build_model


def save_checkpoint(
    path: Path, model_name: str, arch: dict[str, Any], state_dict: dict[str, torch.Tensor], **info: Any
) -> None:
    """Write ``{"model", "arch", "state_dict", **info}`` atomically with ``torch.save``.

    ``info`` holds ``out_channels`` (logit channels), ``classes`` (the task's classes as JSON data,
    :func:`pipeline.data.classes.classes_to_json`), ``epoch`` (1-based), ``valid_dice``, ``image_size``
    (pixels) and ``resize`` (the scale photos are taken at, :func:`pipeline.data.geometry.resize_to_json`) for
    :func:`load_checkpoint` (a multi-class task's also ``valid_miou``); every value must be
    loadable with ``weights_only=True``.
    """
    with atomic_path(path) as tmp:
        torch.save({"model": model_name, "arch": arch, "state_dict": state_dict, **info}, tmp)


def load_checkpoint(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`fit` on ``device`` in eval mode; return it and the checkpoint.

    The file is read and the model rebuilt on the CPU first, so a broken file and a device that
    cannot take the model are told apart. Raises UserError if the file is missing or is not a
    petseg checkpoint, if memory runs out (host or device), or if ``device`` is unusable (e.g. CUDA
    asked for on a machine without a GPU driver).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(ckpt["model"], ckpt["out_channels"], **ckpt["arch"])
        model.load_state_dict(ckpt["state_dict"])
        for key in ("classes", "epoch", "valid_dice", "image_size", "resize"):
            ckpt[key]
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found; run the training stage first (dvc repro)") from None
    except MemoryError:
        raise UserError(f"{path}: out of host memory while loading it; free memory and retry") from None
    except RuntimeError as err:
        raise _runtime_error(path, err) from None
    except (KeyError, TypeError, OSError, EOFError, pickle.UnpicklingError) as err:
        # torch's unpickling message is advice on trusting the file, not what is wrong with it.
        reason = type(err).__name__ if isinstance(err, pickle.UnpicklingError) else first_line(err)
        raise UserError(f"{path}: not a petseg checkpoint ({reason}); {NOT_A_CHECKPOINT_FIX}") from None
    try:
        model.to(device)
    except torch.OutOfMemoryError:
        raise UserError(f"{path}: out of memory on {device} moving the model there; free it or use the CPU") from None
    except RuntimeError as err:  # no driver, no such device index, a device in use by another process
        raise UserError(f"{path}: cannot use {device} ({first_line(err)}); use the CPU") from None
    return model.eval(), ckpt


NOT_A_CHECKPOINT_FIX = "give the .pt a training stage wrote (models/<model>.pt), or retrain it"
# How PyTorch's CPU allocator words a failed allocation (c10/core/impl/alloc_cpu.cpp); torch.load
# raises it as a plain RuntimeError, not as MemoryError.
CPU_OOM = "can't allocate memory"


def _runtime_error(path: Path, err: RuntimeError) -> UserError:
    """A RuntimeError while reading a checkpoint: out of memory, or a file torch cannot read."""
    if isinstance(err, torch.OutOfMemoryError) or CPU_OOM in str(err):
        return UserError(f"{path}: out of host memory while loading it ({first_line(err)}); free memory and retry")
    return UserError(f"{path}: not a petseg checkpoint ({first_line(err)}); {NOT_A_CHECKPOINT_FIX}")
