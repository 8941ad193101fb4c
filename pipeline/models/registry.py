"""Model registry: ``build_model(name, **options)`` for each name of :data:`pipeline.core.constants.MODELS`."""

import inspect

from torch import nn

from pipeline.core import constants
from pipeline.core.errors import UserError
from pipeline.models.resnet34_unet import ResNet34UNet
from pipeline.models.unet import UNet

# In the order of the names in pipeline.core.constants.MODELS.
MODELS: dict[str, type[nn.Module]] = dict(zip(constants.MODELS, (UNet, ResNet34UNet), strict=True))


def check_options(name: str, options: dict) -> type[nn.Module]:
    """Return the class registered as ``name`` after checking ``options`` against its signature.

    Raises UserError (a ValueError) for an unknown name, listing the valid names; for an option the
    class does not take, listing the ones it does; or for a value whose type differs from the
    default's (a bool for a bool, an int for an int, a list for a tuple).
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    params = {k: p for k, p in inspect.signature(cls).parameters.items() if k not in ("in_channels", "out_channels")}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise UserError(
            f"params.yaml: {name} has no option {', '.join(unknown)}; its options are: {', '.join(params)} "
            "(or a shared training key to override)"
        )
    for key, value in options.items():
        default = params[key].default
        kinds = (list, tuple) if isinstance(default, (list, tuple)) else (type(default),)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kinds):
            raise UserError(f"params.yaml: {name}.{key} must be like {default!r}, got {value!r}")
    return cls


def build_model(name: str, out_channels: int = 1, **options) -> nn.Module:
    """Construct the registered model ``name`` with ``out_channels`` logit channels (1 for a binary task,
    C for C classes) and architecture ``options``.

    Raises UserError (a ValueError) as :func:`check_options` does, or when the class rejects a value.
    """
    cls = check_options(name, options)
    try:
        return cls(out_channels=out_channels, **options)
    except (TypeError, ValueError) as err:
        raise UserError(f"params.yaml: {name}: {err}") from None
