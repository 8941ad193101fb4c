"""Weight initialisation schemes: ``init_weights(model, "default" | "kaiming", zero_init_residual)``."""

import math

from torch import nn

from pipeline.core.constants import INIT_SCHEMES
from pipeline.core.errors import UserError
from pipeline.models.blocks import BasicBlock


def init_weights(model: nn.Module, scheme: str, zero_init_residual: bool = False) -> None:
    """Initialise ``model``'s parameters in place (no RNG use by "default").

    ``scheme``:
      - "default": keep PyTorch's initialisation (each layer's ``reset_parameters``).
      - "kaiming": as torchvision's ResNet (``torchvision/models/resnet.py``): every Conv2d and
        ConvTranspose2d weight ~ N(0, 2 / fan_out), He et al. 2015 (arXiv:1502.01852) eq. 14, where
        fan_out = out_channels/groups · kH · kW is how many outputs each input feeds; conv biases 0;
        BatchNorm2d weight 1, bias 0. The 1x1 output conv ``model.head`` (if any) is the exception:
        N(0, 1 / fan_in), fan_in = in_channels · kH · kW, bias 0, as it feeds a sigmoid, not a ReLU,
        and its fan_out is out_channels = 1.

    ``zero_init_residual``: afterwards set the weight of the last BatchNorm (``bn2``) of every
    :class:`~pipeline.models.blocks.BasicBlock` to 0, so each residual branch outputs 0 and each
    block starts as ``relu(shortcut(x))`` (Goyal et al. 2017, arXiv:1706.02677;
    torchvision's ``zero_init_residual``).

    Raises UserError (a ValueError) for an unknown ``scheme`` (listing
    :data:`~pipeline.core.constants.INIT_SCHEMES`) or for ``zero_init_residual`` on a model without
    BasicBlocks (the UNet); the model is then unchanged.
    """
    if scheme not in INIT_SCHEMES:
        raise UserError(f"unknown init scheme {scheme!r}; valid names: {', '.join(INIT_SCHEMES)}")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    if zero_init_residual and not blocks:
        raise UserError(
            f"zero_init_residual: {type(model).__name__} has no residual blocks (only resnet34_unet has); "
            "set it to false for this model"
        )
    if scheme == "kaiming":
        _kaiming(model)
    if zero_init_residual:
        for block in blocks:
            nn.init.zeros_(block.bn2.weight)


def _kaiming(model: nn.Module) -> None:
    """The "kaiming" scheme of :func:`init_weights`, in place, module by module in ``model.modules()`` order
    (the order of the RNG draws)."""
    head = getattr(model, "head", None)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, _head_std(m) if m is head else _fan_out_std(m))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _head_std(head: nn.Conv2d) -> float:
    # The head feeds a sigmoid, not a ReLU, and its fan_out is out_channels (1): N(0, 2 / 1)
    # would give logits of std ~sqrt(in_channels) (4 for the default 16) at init, a
    # saturated sigmoid and huge first losses. Unit-gain fan-in (LeCun et al. 1998,
    # "Efficient BackProp"; He et al. 2015 eq. 10 with gain 1) keeps the logits' variance
    # near that of the head's inputs instead.
    return 1.0 / math.sqrt(head.weight[0].numel())


def _fan_out_std(conv: nn.Conv2d | nn.ConvTranspose2d) -> float:
    # Conv2d weight is (out, in/groups, kH, kW), ConvTranspose2d (in, out/groups, kH, kW):
    # each input feeds out/groups · kH · kW outputs either way. kaiming_normal_(mode="fan_out")
    # would read dim 0, the in_channels, of a transposed conv.
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
    return math.sqrt(2.0 / (conv.weight.shape[out_dim] * conv.weight[0, 0].numel()))
