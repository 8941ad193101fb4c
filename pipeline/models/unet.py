"""UNet (Ronneberger, Fischer & Brox 2015, arXiv:1505.04597), written from scratch."""

import torch
from torch import nn

from pipeline.models.blocks import DoubleConv, UpBlock, check_input


class UNet(nn.Module):
    """Four max-pool downsamplings, a symmetric decoder with skip concatenation, a 1x1 head.

    Encoder widths are ``base_channels`` x (1, 2, 4, 8, 16) (64 → 1024 in the paper).

    Args:
        in_channels: image channels (3 for RGB).
        out_channels: logit channels (1 for binary segmentation).
        base_channels: width of the first level; 64 in the paper, smaller for CPU runs.
        bilinear: upsample by bilinear interpolation + 1x1 conv instead of transposed conv.

    ``forward``: float (N, in_channels, H, W) → logits float (N, out_channels, H, W).
    Raises ValueError if H or W is not a multiple of 32.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_channels: int = 64, bilinear: bool = False):
        super().__init__()
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        c = [base_channels * 2**i for i in range(5)]
        self.inc = DoubleConv(in_channels, c[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(c[i], c[i + 1])) for i in range(4))
        self.ups = nn.ModuleList(UpBlock(c[i + 1], c[i], c[i], bilinear) for i in reversed(range(4)))
        self.head = nn.Conv2d(c[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
