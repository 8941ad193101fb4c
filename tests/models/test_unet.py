"""The UNet (pipeline/models/unet.py): its widths follow base_channels, and the skips carry the input."""

import torch

from pipeline.models.registry import build_model


def test_unet_width_follows_base_channels():
    model = build_model("unet", base_channels=8)
    assert [d[1][-3].out_channels for d in model.downs] == [16, 32, 64, 128]
    assert model.head.in_channels == 8


def test_skip_connections_carry_information_to_the_output():
    # With the deepest features zeroed, the output must still depend on the input through the skips.
    torch.manual_seed(0)
    model = build_model("unet", base_channels=4).eval()
    model.downs[3].register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b))
