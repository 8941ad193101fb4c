"""Logits from a trained model, PyTorch or ONNX Runtime, with optional test-time augmentation.

Both back ends take the same input, float32 (N, 3, S, S) ImageNet-normalised images, and return float32
logits (N, L, S, S) as NumPy arrays (L = 1 for a binary model, C for C classes), so evaluation, export
checks and ``petseg predict`` share one path whatever runs the network.
"""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.constants import DEFAULT_THRESHOLD, TTA_MODES
from pipeline.core.device import autocast, memory_format
from pipeline.core.errors import UserError, first_line
from pipeline.data.classes import Classes, classes_from_json
from pipeline.data.colour import model_input
from pipeline.data.geometry import Resize, extents, own_padding, resize_from_json, same_shape_runs
from pipeline.evaluate.confusion import to_labels
from pipeline.models.checkpoint import load_checkpoint

Forward = Callable[[np.ndarray], np.ndarray]


def torch_forward(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> Forward:
    """Wrap a model in eval mode: float32 (N, 3, S, S) → logits float32 (N, L, S, S), under inference_mode,
    autocast to ``dtype`` (None: fp32) and in the memory format of :func:`pipeline.core.device.memory_format`
    (bf16 channels_last runs inference 2-2.5x as fast as fp32 NCHW on an AVX512-BF16 CPU:
    docs/performance.md)."""
    fmt = memory_format(device.type)
    model.eval().to(memory_format=fmt)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(device.type, dtype):
            x = torch.from_numpy(x).to(device).contiguous(memory_format=fmt)
            return model(x).float().cpu().numpy()

    return forward


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for a torch device type: CUDA first on "cuda" (ONNX Runtime
    falls back to the next provider when its build lacks one), the CPU always."""
    return (["CUDAExecutionProvider"] if device == "cuda" else []) + ["CPUExecutionProvider"]


def onnx_forward(path: Path, device: str = "cpu") -> tuple[Forward, dict[str, str]]:
    """An ONNX Runtime session on ``path`` (providers: :func:`onnx_providers`) as a forward function,
    and the model's metadata_props. Raises UserError if the file is missing or not an ONNX model.
    """
    import onnxruntime as ort  # imported here: a training-only install never loads it

    try:
        session = ort.InferenceSession(str(path), providers=onnx_providers(device))
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        if not Path(path).is_file():
            raise UserError(f"{path}: ONNX model not found; run `dvc repro` (export stage)") from None
        raise UserError(f"{path}: not an ONNX model ({first_line(err)}); export it again") from None
    name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return forward, dict(session.get_modelmeta().custom_metadata_map)


@dataclass(frozen=True)
class LoadedModel:
    """A forward function and what is known of the weights: registry ``name``, ``image_size`` (the training
    images' side, pixels), the task's ``classes`` (the forward gives 1 logit channel for a binary task, C
    otherwise), the ``resize`` photos are taken at, and the checkpoint's or the ONNX metadata's other
    ``info``."""

    forward: Forward
    name: str
    image_size: int
    classes: Classes
    resize: Resize
    info: dict[str, Any]


def load_model(path: Path, device: torch.device, dtype: torch.dtype | None = None) -> LoadedModel:
    """Load a petseg checkpoint (.pt, PyTorch, run autocast to ``dtype``; None: fp32) or an exported model
    (.onnx, ONNX Runtime, fp32).

    Raises UserError if the file is missing, or is neither a petseg checkpoint nor a petseg ONNX
    export (whose metadata_props hold ``model``, ``image_size``, ``classes`` and ``resize``, the last two as
    JSON).
    """
    path = Path(path)
    if path.suffix == ".onnx":
        forward, meta = onnx_forward(path, device.type)
        try:
            classes, resize = (
                classes_from_json(json.loads(meta["classes"])),
                resize_from_json(json.loads(meta["resize"])),
            )
            return LoadedModel(forward, meta["model"], int(meta["image_size"]), classes, resize, meta)
        except (KeyError, ValueError, TypeError):
            raise UserError(
                f"{path}: an ONNX model but not a petseg export (no model/image_size/classes/resize metadata); "
                "export it again"
            ) from None
    model, ckpt = load_checkpoint(path, device)
    classes, resize = classes_from_json(ckpt["classes"]), resize_from_json(ckpt["resize"])
    forward = torch_forward(model, device, dtype)
    return LoadedModel(forward, ckpt["model"], int(ckpt["image_size"]), classes, resize, ckpt)


def prepare(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) → float32 (N, 3, S, S) as training sees it (:func:`pipeline.data.colour.model_input`)."""
    # A copy of the batch: the cache is a read-only memory map, which torch tensors must not wrap.
    return model_input(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)).contiguous().numpy()


def tta_forward(forward: Forward, x: np.ndarray, tta: str) -> np.ndarray:
    """Logits of ``x`` float32 (N, 3, S, S) → float32 (N, L, S, S).

    "none": ``forward(x)``. "hflip": the mean of the logits of the image and of its mirror image
    (flipped back), the usual flip test-time augmentation. Raises ValueError for another mode.
    """
    if tta == "none":
        return forward(x)
    if tta == "hflip":
        mirrored = forward(np.ascontiguousarray(x[..., ::-1]))[..., ::-1]
        return (forward(x) + mirrored) / 2
    raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")


def window_starts(length: int, window: int) -> list[int]:
    """Where windows of ``window`` pixels start along an axis of ``length`` pixels: every half window, the
    last one flush with the end, so every pixel is covered (one window at 0 when it covers the axis)."""
    if length <= window:
        return [0]
    return sorted(set(range(0, length - window, window // 2)) | {length - window})


def window_forward(forward: Forward, x: np.ndarray, window: int) -> np.ndarray:
    """Logits float32 (N, L, H, W) of ``x`` float32 (N, 3, H, W): ``forward(x)`` for ``window`` 0, else the
    mean, at each pixel, of the logits of the ``window`` x ``window`` windows that cover it
    (:func:`window_starts` on each axis; an axis shorter than the window is taken whole), as the sliding
    window inference of mmsegmentation's ``slide`` mode. H, W and ``window`` are multiples of 32."""
    height, width = x.shape[2:]
    if window == 0 or (height <= window and width <= window):
        return forward(x)
    total, count = None, np.zeros((height, width), np.float32)
    for top in window_starts(height, window):
        for left in window_starts(width, window):
            rows, cols = slice(top, top + window), slice(left, left + window)
            logits = forward(np.ascontiguousarray(x[:, :, rows, cols]))
            if total is None:
                total = np.zeros((*logits.shape[:2], height, width), np.float32)
            total[:, :, rows, cols] += logits
            count[rows, cols] += 1
    return total / count


def iter_logits(
    forward: Forward, images: np.ndarray, batch_size: int, tta: str, window: int = 0, sizes: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, float]]:
    """Logits float32 (B, L, H, W) (L = 1 for a binary model, C for C classes) of uint8 images (N, H, W, 3),
    H and W multiples of 32, ``batch_size`` images at a time, in order, each with the seconds spent in
    ``forward`` on it; ``window`` > 0 runs the images in sliding windows (:func:`window_forward`), inside the
    ``tta``. ``sizes`` (optional) int (N, 2): each image's (height, width) on the canvas; each is then taken
    with only its own padding to a multiple of 32 (:func:`~pipeline.data.geometry.own_padding`; the images of
    a batch that share that shape run together), and its logits outside it are 0. Memory: one batch, however
    large ``images`` (a memory map is read one batch at a time)."""
    run = forward if window == 0 else lambda x: window_forward(forward, x, window)
    shapes = own_padding(extents(images.shape, sizes))
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        logits, seconds = None, 0.0
        for (height, width), rows in same_shape_runs(shapes[start : start + batch_size]).items():
            x = prepare(batch[rows, :height, :width] if len(rows) < len(batch) else batch[:, :height, :width])
            tic = time.perf_counter()
            part = tta_forward(run, x, tta)  # hflip flips the last axis, whatever L is
            seconds += time.perf_counter() - tic
            if logits is None:
                logits = np.zeros((len(batch), part.shape[1], *batch.shape[1:3]), np.float32)
            logits[rows, :, :height, :width] = part
        yield logits, seconds


def predict_logits(
    forward: Forward, images: np.ndarray, batch_size: int, tta: str, window: int = 0, sizes: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Logits float32 (N, L, H, W) for uint8 images (N, H, W, 3), in batches of ``batch_size``: all of
    :func:`iter_logits` in one array, and the seconds spent in ``forward`` alone (inference
    throughput = N / seconds)."""
    batches = list(iter_logits(forward, images, batch_size, tta, window, sizes))
    return np.concatenate([logits for logits, _ in batches]), sum(spent for _, spent in batches)


def resize_logits(logits: np.ndarray, height: int, width: int) -> torch.Tensor:
    """One image's logits float32 (L, S, S) resized bilinearly to float32 (1, L, height, width) pixels.

    Interpolating logits (not label maps) keeps the boundary sub-pixel accurate; ``align_corners=False``,
    so a same-size resize is the identity."""
    t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)


def native_labels(logits: np.ndarray, height: int, width: int, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """One image's label map uint8 (height, width) from its logits float32 (L, h, w) (its padding cut off
    already): resized (:func:`resize_logits`), then :func:`~pipeline.evaluate.confusion.to_labels` (a binary
    model's class 1
    where sigmoid > ``threshold``; else the highest logit's class). Memory: L x height x width float32."""
    return to_labels(resize_logits(logits, height, width), threshold)[0].to(torch.uint8).numpy()
