"""ResNet34-UNet: a ResNet-34 encoder with a UNet decoder, written from scratch.

The encoder's parameter names are torchvision's ``resnet34`` ones (minus ``fc``), so its ImageNet
weights load as they are (:mod:`pipeline.models.pretrained`).
"""

import re

import torch
from torch import nn

from pipeline.models.blocks import BasicBlock, UpBlock, check_input

# He et al. 2016 (arXiv:1512.03385), Table 1, 34-layer column: BasicBlocks per stage and widths.
RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET34_WIDTHS = (64, 128, 256, 512)
STEM_WIDTH = 64

# Checkpoints written before the encoder took torchvision's names: stem.0/stem.1 were conv1/bn1
# and layers.<i> was layer<i+1>. Renamed on load so those checkpoints keep working.
_LEGACY_KEY = re.compile(r"(stem\.[01]|layers\.[0-3])\.")
_LEGACY_NAME = {"stem.0": "encoder.conv1", "stem.1": "encoder.bn1"} | {
    f"layers.{i}": f"encoder.layer{i + 1}" for i in range(4)
}


class ResNet34Encoder(nn.Module):
    """The convolutional part of ResNet-34 (He et al. 2016), laid out as ``torchvision.models.resnet34``.

    Children ``conv1`` (7x7 stride 2), ``bn1``, ``relu``, ``maxpool`` (3x3 stride 2) and ``layer1`` to
    ``layer4`` (Sequentials of 3, 4, 6, 3 :class:`BasicBlock` at 64/128/256/512 channels), so
    ``state_dict()`` has torchvision's keys and shapes without ``fc.weight``/``fc.bias``.

    ``forward``: float (N, in_channels, H, W) → five float feature maps, shallowest first:
    the stem after ReLU (N, 64, H/2, W/2), then layer1..layer4 (N, 64|128|256|512, H/4 .. H/32).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_WIDTH, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        width_in = STEM_WIDTH
        for i, (blocks, width) in enumerate(zip(RESNET34_BLOCKS, RESNET34_WIDTHS, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(width_in, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            width_in = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.relu(self.bn1(self.conv1(x)))]
        x = self.maxpool(feats[0])
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def _rename_legacy_keys(module, state_dict, prefix, *_) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        old = _LEGACY_KEY.match(key, len(prefix))
        if old:
            state_dict[prefix + _LEGACY_NAME[old.group(1)] + key[old.end() - 1 :]] = state_dict.pop(key)


class ResNet34UNet(nn.Module):
    """ResNet-34 encoder, UNet decoder with a skip from every encoder stage.

    Encoder (:class:`ResNet34Encoder`, He et al. 2016): 7x7 stride-2 conv stem (H/2, 64 ch), 3x3
    stride-2 max-pool, then BasicBlock stages of 3, 4, 6, 3 blocks at 64/128/256/512 channels (H/4,
    H/8, H/16, H/32). Decoder: five :class:`UpBlock` steps back to H; the first four take skips from
    layer3, layer2, layer1 and the stem, the last upsamples H/2 → H without a skip. A 1x1 head gives
    logits. ``load_state_dict`` also accepts checkpoints with the encoder's former names
    (``stem.0``, ``stem.1``, ``layers.<i>``).

    Args:
        in_channels: image channels (3 for RGB).
        out_channels: logit channels (1 for binary segmentation).
        decoder_channels: widths of the five decoder steps, deepest first.
        bilinear: bilinear upsampling + 1x1 conv instead of transposed convs.

    ``forward``: float (N, in_channels, H, W) → logits float (N, out_channels, H, W).
    Raises ValueError if H or W is not a multiple of 32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        decoder_channels: tuple[int, ...] | list[int] = (256, 128, 64, 32, 16),
        bilinear: bool = False,
    ):
        super().__init__()
        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != 5 or min(decoder_channels) < 1:
            raise ValueError(f"decoder_channels must be 5 positive widths, got {list(decoder_channels)}")
        self.encoder = ResNet34Encoder(in_channels)
        # Skips, deepest first: layer3, layer2, layer1, stem, none.
        skip_widths = (RESNET34_WIDTHS[2], RESNET34_WIDTHS[1], RESNET34_WIDTHS[0], STEM_WIDTH, 0)
        ins = (RESNET34_WIDTHS[3],) + decoder_channels[:-1]
        self.ups = nn.ModuleList(
            UpBlock(i, s, o, bilinear) for i, s, o in zip(ins, skip_widths, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 1)
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        feats = self.encoder(x)
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        x = feats[4]
        for up, skip in zip(self.ups, skips, strict=True):
            x = up(x, skip)
        return self.head(x)
