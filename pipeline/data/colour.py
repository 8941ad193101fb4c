"""From uint8 pixels to the model's input, batch-wise on the device: colour jitter and ImageNet normalisation.

The loader ships uint8 batches (:class:`pipeline.data.dataset.SegmentationDataset`) with each
sample's jitter drawn on its worker from the sample's own seed, so the batches do not depend on the
worker count; :func:`model_input` applies them where the model runs, one op over the whole batch.
The ops are those of torchvision's ``ColorJitter`` (brightness, contrast, saturation, each by a factor
in [1 - s, 1 + s], in an order drawn per sample) on float images in [0, 1].
"""

import functools

import torch

# ImageNet channel statistics (torchvision model docs); the usual normalisation for natural photos.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)
# A sample's jitter: factors of brightness, contrast, saturation, then the order they apply in.
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2
IDENTITY = (1.0, 1.0, 1.0, 0.0, 1.0, 2.0)


def draw_jitter(strength: float) -> torch.Tensor:
    """One sample's jitter, float32 (6,): three factors uniform in [1 - strength, 1 + strength], then a
    random order of the three ops; drawn from torch's default RNG (so under the sample's seed). For
    ``strength`` 0, the identity without drawing anything."""
    if not strength:
        return torch.tensor(IDENTITY)
    factors = torch.empty(3).uniform_(1 - strength, 1 + strength)
    return torch.cat([factors, torch.randperm(3).float()])


@functools.lru_cache(maxsize=32)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` as a (C, 1, 1) tensor on ``device``, built once per (values, device, dtype).

    Built in each training step instead, ``torch.tensor(..., device="cuda")`` copies from pageable host
    memory, which blocks the host until the GPU has caught up: a sync in every step. Made outside
    inference mode, so a constant first built under validation's ``inference_mode`` also serves training.
    """
    with torch.inference_mode(False):
        return torch.tensor(values, device=device, dtype=dtype).view(-1, 1, 1)


def _luma(images: torch.Tensor) -> torch.Tensor:
    return (images * _constant(LUMA, images.device, images.dtype)).sum(1, keepdim=True)


def _apply(op: int, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """One jitter op on float images (N, 3, H, W) in [0, 1] with per-sample factors (N, 1, 1, 1)."""
    if op == BRIGHTNESS:
        blended = images * factor
    elif op == CONTRAST:
        mean = _luma(images).mean((1, 2, 3), keepdim=True)
        blended = factor * images + (1 - factor) * mean
    else:
        blended = factor * images + (1 - factor) * _luma(images)
    return blended.clamp(0, 1)


def colour_jitter(images: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """Apply each sample's jitter (N, 6) (:func:`draw_jitter`) to float images (N, 3, H, W) in [0, 1].

    Op k of a sample is its order's k-th entry; each step runs every op once over the whole batch and
    keeps its result for the samples whose k-th op it is. Returns float (N, 3, H, W) in [0, 1].
    """
    factors = jitter[:, :3].to(images.dtype).view(-1, 3, 1, 1, 1)
    order = jitter[:, 3:].long()
    for step in range(3):
        out = images
        for op in (BRIGHTNESS, CONTRAST, SATURATION):
            chosen = (order[:, step] == op).view(-1, 1, 1, 1)
            out = torch.where(chosen, _apply(op, images, factors[:, op]), out)
        images = out
    return images


def normalize(images: torch.Tensor) -> torch.Tensor:
    """float images (N, 3, H, W) or (3, H, W) in [0, 1] → ImageNet-normalised, same shape and dtype."""
    mean, std = _constant(MEAN, images.device, images.dtype), _constant(STD, images.device, images.dtype)
    return (images - mean) / std


def model_input(images: torch.Tensor, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, 3, H, W) in [0, 255] → float32 model input, ImageNet-normalised, after each
    sample's colour jitter (N, 6) when given (None: none). A jitter still on the host is copied to the images' device,
    a blocking copy on a GPU: a training step moves it there beforehand, non_blocking from pinned memory."""
    images = images.float() / 255.0
    if jitter is not None:
        images = colour_jitter(images, jitter.to(images.device))
    return normalize(images)
