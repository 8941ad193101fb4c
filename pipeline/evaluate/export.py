"""ONNX export of a trained model (torch.onnx, dynamic batch and size), checked with ONNX Runtime."""

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.constants import SIZE_MULTIPLE
from pipeline.core.errors import UserError
from pipeline.core.io import atomic_path
from pipeline.evaluate.inference import onnx_forward, torch_forward

INPUT, OUTPUT = "images", "logits"


def export_onnx(model: nn.Module, path: Path, opset: int) -> None:
    """Write ``model`` (on the CPU) as ONNX to ``path`` with torch.onnx's torch.export-based exporter.

    Input ``images`` float32 (N, 3, H, W), ImageNet-normalised; output ``logits`` float32
    (N, K, H, W), K the model's logit channels (1 for a binary task, C for C classes). N is dynamic;
    H and W are dynamic multiples of 32 (declared as 32·h, 32·w, the models' constraint).
    """
    model = model.cpu().eval()
    # Traced at 64x96: at 32 px the ResNet's deepest map is 1x1 and torch.export would specialise
    # the size to it; unequal H and W keep the two dims independent.
    example = torch.zeros(2, 3, 2 * SIZE_MULTIPLE, 3 * SIZE_MULTIPLE)
    batch, h, w = torch.export.Dim("batch", min=1), torch.export.Dim("h", min=1), torch.export.Dim("w", min=1)
    shapes = {"x": {0: batch, 2: SIZE_MULTIPLE * h, 3: SIZE_MULTIPLE * w}}
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=shapes,
        opset_version=opset,
        verbose=False,
    )
    program.save(str(path))


def parity_inputs(images: np.ndarray) -> list[np.ndarray]:
    """Inputs for the parity check from normalised images float32 (K, 3, S, S): the batch as is, and
    its first image resized to (S + 32) x (S + 64) pixels (another batch size and a non-square size)."""
    other = F.interpolate(torch.from_numpy(images[:1]), size=(images.shape[2] + 32, images.shape[3] + 64))
    return [images, other.numpy()]


def max_abs_diff(model: nn.Module, onnx_path: Path, inputs: list[np.ndarray]) -> float:
    """Largest absolute logit difference between ``model`` (PyTorch, CPU) and ONNX Runtime over ``inputs``,
    over every logit channel (all C of a multi-class model)."""
    reference = torch_forward(model.cpu(), torch.device("cpu"))
    exported, _ = onnx_forward(onnx_path)
    return max(float(np.abs(reference(x) - exported(x)).max()) for x in inputs)


def export_checked(
    model: nn.Module,
    path: Path,
    metadata: dict[str, str],
    images: np.ndarray,
    opset: int,
    tolerance: float,
) -> float:
    """Export, check against PyTorch on ``images`` float32 (K, 3, S, S), record the result, write atomically.

    The ONNX file's metadata_props get ``metadata`` plus ``onnx_max_abs_diff``, so a consumer (and
    the evaluate stage) can read what the file is and how faithful it is. Returns the difference.
    Raises UserError, writing nothing, if it exceeds ``tolerance``.
    """
    with atomic_path(path) as tmp:
        export_onnx(model, tmp, opset)
        diff = max_abs_diff(model, tmp, parity_inputs(images))
        if not diff <= tolerance:
            raise UserError(
                f"{path}: ONNX Runtime logits differ from PyTorch by {diff:.3g} > export.max_abs_diff {tolerance:g}; "
                "try another export.opset"
            )
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {**metadata, "onnx_max_abs_diff": repr(diff)})
        onnx.save(proto, str(tmp))
    return diff
