"""Building blocks shared by the UNet and the ResNet34-UNet."""

import torch
from torch import nn

from pipeline.core.constants import SIZE_MULTIPLE


def check_input(x: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is (N, C, H, W) with H and W multiples of 32 pixels."""
    if x.dim() != 4:
        raise ValueError(f"expected input of shape (N, C, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(
            f"input height and width must be multiples of {SIZE_MULTIPLE} pixels, got {h}x{w}; "
            f"set image_size in params.yaml to a multiple of {SIZE_MULTIPLE}"
        )


class DoubleConv(nn.Sequential):
    """(3x3 conv, padding 1 → BatchNorm → ReLU) twice: (N, in, H, W) → (N, out, H, W).

    The UNet unit of Ronneberger et al. 2015 (arXiv:1505.04597), with padding so sizes are kept
    and BatchNorm (Ioffe & Szegedy 2015) added, as is now standard.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Decoder step: upsample x2, concatenate the skip connection, DoubleConv.

    ``forward(x, skip)``: x is (N, in_channels, H, W), skip is (N, skip_channels, 2H, 2W) or None
    when ``skip_channels`` is 0; returns (N, out_channels, 2H, 2W). Upsampling is a 2x2 stride-2
    transposed conv, or bilinear interpolation followed by a 1x1 conv when ``bilinear``; either
    way it halves the channels before the concatenation, as in Ronneberger et al. 2015.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool = False) -> None:
        super().__init__()
        mid = max(in_channels // 2, 1)
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, mid, 1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, mid, 2, stride=2)
        self.conv = DoubleConv(mid + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016, arXiv:1512.03385, Fig. 2 left).

    Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut:
    (N, in, H, W) → (N, out, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)
