"""Pretrained encoder weights: ``load_encoder_weights(model, "none" | "imagenet" | path)``."""

import http.client
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet34_Weights

from pipeline.core.errors import UserError
from pipeline.models.resnet34_unet import ResNet34Encoder

PARAM = "resnet34_unet.encoder_weights"
# torchvision's ResNet-34 ImageNet-1k weights (top-1 73.3 %), the file its resnet34(weights=...) uses.
IMAGENET_URL = ResNet34_Weights.IMAGENET1K_V1.url
SAVE_HINT = "save one with torch.save(torchvision.models.resnet34().state_dict(), path)"


def imagenet_file() -> Path:
    """The ImageNet weights file in torch.hub's cache, downloaded from :data:`IMAGENET_URL` if absent.

    Uses torchvision's location, ``torch.hub.get_dir()/checkpoints/<file name of the URL>``
    (``$TORCH_HOME/hub/checkpoints/resnet34-b627a593.pth``), so a file torchvision fetched is
    reused and vice versa. The download goes to a temporary file that is moved into place only once
    complete and its SHA-256 matches the prefix in the file name (as ``resnet34(weights=...)``
    checks it). Raises UserError if the download fails (no network, HTTP error, bad hash).
    """
    url = IMAGENET_URL
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        return cached
    print(f"downloading {url} to {cached}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = torch.hub.HASH_REGEX.search(cached.name).group(1)
        torch.hub.download_url_to_file(url, str(cached), hash_prefix, progress=False)
    except (OSError, http.client.HTTPException, RuntimeError) as err:  # URLError, HTTPError; bad hash
        reason = " ".join(str(err).split()) or type(err).__name__  # one line, never empty
        raise UserError(
            f"{PARAM}: imagenet: downloading {url} failed ({reason}); download it on a "
            f"machine with internet, copy it here and set {PARAM}: /path/to/{cached.name} (or put it at {cached})"
        ) from None
    return cached


def read_state_dict(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors saved at ``path`` (``torch.load(weights_only=True)`` on the CPU) as a plain dict.

    Raises UserError, ending in ``fix``, if the file is missing or is not a dict of tensors.
    """
    if not path.is_file():
        raise UserError(f"{PARAM}: {path}: no such file; give none, imagenet or the path of a resnet34 state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or corrupt file: UnpicklingError, EOFError, KeyError, RuntimeError...
        raise UserError(
            f"{PARAM}: {path} is not a torch state dict ({type(err).__name__} in torch.load); {fix}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(f"{PARAM}: {path} is not a state dict (a dict of named tensors); {fix}")
    return dict(state)


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def load_encoder_weights(model: nn.Module, spec: str) -> None:
    """Copy pretrained ResNet-34 weights into ``model.encoder`` (a :class:`ResNet34Encoder`).

    ``spec``: "none" (do nothing, for any model), "imagenet" (torchvision's
    ``ResNet34_Weights.IMAGENET1K_V1``, from torch.hub's cache or downloaded once, see
    :func:`imagenet_file`), or the path of a torchvision resnet34 state dict
    (``torch.save(torchvision.models.resnet34().state_dict(), path)``). The ``fc.*`` classifier
    is dropped; every other tensor must match the encoder's key and shape. Missing BatchNorm
    ``num_batches_tracked`` counters (files older than PyTorch 0.4.1) keep the encoder's
    values, as BatchNorm does for such files. The weights expect ImageNet-normalised input
    (:func:`pipeline.data.colour.normalize`).

    Raises UserError (a ValueError) if the model has no ResNet-34 encoder (only resnet34_unet has
    one), if the download fails, if the file is missing or not a state dict, or if its keys or
    shapes differ from the encoder's (naming some of them). The model is unchanged on error.
    """
    if spec == "none":
        return
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, ResNet34Encoder):
        raise UserError(
            f"{PARAM}: {spec}: {type(model).__name__} has no ResNet-34 encoder to load weights into "
            "(only resnet34_unet has one); use none for this model"
        )
    if spec == "imagenet":
        path, fix = imagenet_file(), "delete it to download it again"
    else:
        path, fix = Path(spec).expanduser(), SAVE_HINT
    state = {k: v for k, v in read_state_dict(path, fix).items() if not k.startswith("fc.")}
    encoder.load_state_dict(_fitted(state, encoder, path, fix))


def _fitted(state: dict[str, torch.Tensor], encoder: ResNet34Encoder, path: Path, fix: str) -> dict[str, torch.Tensor]:
    """``state`` (read from ``path``, ``fc.*`` dropped) completed with the encoder's BatchNorm counters it
    lacks. Raises UserError, ending in ``fix``, if any other key is missing or extra, or a shape differs."""
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        found = "; ".join(
            f"{name}: {_some(keys)}" for name, keys in (("missing", missing), ("unexpected", unexpected)) if keys
        )
        raise UserError(f"{PARAM}: {path} is not a resnet34 state dict ({found}); {fix}")
    wrong = [
        f"{k} {tuple(v.shape)}, needs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise UserError(
            f"{PARAM}: {path} does not fit this encoder ({_some(wrong)}); give a resnet34 for "
            f"{encoder.conv1.in_channels} input channels"
        )
    # Only BatchNorm counters can be missing here; keep the encoder's own, as BatchNorm does for such files.
    return {**state, **{key: expected[key] for key in expected.keys() - state.keys()}}
