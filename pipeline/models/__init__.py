"""Model registry: ``build_model("unet" | "resnet34_unet", **options)``."""

import inspect

from torch import nn

from pipeline.errors import UserError
from pipeline.models.resnet34_unet import ResNet34UNet
from pipeline.models.unet import UNet

MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "resnet34_unet": ResNet34UNet}


def build_model(name: str, **options) -> nn.Module:
    """Construct the registered model ``name`` with architecture ``options``.

    Raises UserError (a ValueError) for an unknown name, listing the valid names, or for an option
    the class does not take, listing the options it does take.
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("in_channels", "out_channels")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"params.yaml: {name} has no option {', '.join(unknown)}; its options are: {', '.join(accepted)} "
            "(or a shared training key to override)"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise UserError(f"params.yaml: {name}: {err}") from None
