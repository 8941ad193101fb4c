"""ResNet34-UNet: a ResNet-34 encoder with a UNet decoder, written from scratch (no downloads)."""

import torch
from torch import nn

from pipeline.models.blocks import BasicBlock, UpBlock, check_input

# He et al. 2016 (arXiv:1512.03385), Table 1, 34-layer column: BasicBlocks per stage and widths.
RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET34_WIDTHS = (64, 128, 256, 512)


class ResNet34UNet(nn.Module):
    """ResNet-34 encoder, UNet decoder with a skip from every encoder stage.

    Encoder (He et al. 2016): 7x7 stride-2 conv stem (H/2, 64 ch), 3x3 stride-2 max-pool, then
    BasicBlock stages of 3, 4, 6, 3 blocks at 64/128/256/512 channels (H/4, H/8, H/16, H/32).
    Decoder: five :class:`UpBlock` steps back to H; the first four take skips from layer3,
    layer2, layer1 and the stem, the last upsamples H/2 → H without a skip. A 1x1 head gives logits.

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
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, width_in = [], 64
        for i, (blocks, width) in enumerate(zip(RESNET34_BLOCKS, RESNET34_WIDTHS, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(width_in, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            width_in = width
        self.layers = nn.ModuleList(layers)
        # Skips, deepest first: layer3, layer2, layer1, stem, none.
        skip_widths = (RESNET34_WIDTHS[2], RESNET34_WIDTHS[1], RESNET34_WIDTHS[0], 64, 0)
        ins = (RESNET34_WIDTHS[3],) + decoder_channels[:-1]
        self.ups = nn.ModuleList(
            UpBlock(i, s, o, bilinear) for i, s, o in zip(ins, skip_widths, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        stem = self.stem(x)
        feats = [stem]
        x = self.pool(stem)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        x = feats[4]
        for up, skip in zip(self.ups, skips, strict=True):
            x = up(x, skip)
        return self.head(x)
