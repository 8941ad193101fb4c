"""The ResNet34-UNet (pipeline/models/resnet34_unet.py): its encoder is torchvision's resnet34, by names,
shapes and features, and checkpoints of the former encoder names still load."""

import re

import torch
import torchvision

from pipeline.models.registry import build_model
from tests.support import TINY_ARCH


def test_resnet34_encoder_state_dict_is_torchvision_resnet34s_without_fc():
    ours = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"]).encoder.state_dict()
    reference = torchvision.models.resnet34(weights=None).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [
        (k, v.shape) for k, v in reference.items() if k not in ("fc.weight", "fc.bias")
    ]


def test_resnet34_encoder_computes_torchvision_resnet34s_features():
    # With torchvision's weights and statistics, each of our five feature maps is the reference's.
    torch.manual_seed(0)
    reference = torchvision.models.resnet34(weights=None)
    for name, buffer in reference.named_buffers():
        if "running" in name:  # non-trivial statistics, so eval-mode BatchNorm is not the identity
            buffer.copy_(torch.rand_like(buffer) + 0.5)
    ours = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"]).eval()
    ours.encoder.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    reference.eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        feats = ours.encoder(x)
        expected = [reference.relu(reference.bn1(reference.conv1(x)))]
        h = reference.maxpool(expected[0])
        for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
            h = layer(h)
            expected.append(h)
    assert [f.shape[1:] for f in feats] == [(64, 16, 32), (64, 8, 16), (128, 4, 8), (256, 2, 4), (512, 1, 2)]
    for ours_f, ref_f in zip(feats, expected, strict=True):
        torch.testing.assert_close(ours_f, ref_f, rtol=0, atol=0)


def test_resnet34_unet_loads_checkpoints_with_the_former_encoder_names():
    # Before the encoder took torchvision's names it was stem.0 (conv), stem.1 (bn) and layers.0-3.
    torch.manual_seed(0)
    saved = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"]).state_dict()

    def old_name(key):
        key = key.replace("encoder.conv1.", "stem.0.").replace("encoder.bn1.", "stem.1.")
        return re.sub(r"^encoder\.layer(\d)\.", lambda m: f"layers.{int(m[1]) - 1}.", key)

    legacy = {old_name(k): v for k, v in saved.items()}
    assert {"stem.0.weight", "stem.1.running_var", "layers.0.0.conv1.weight", "layers.3.2.bn2.bias"} <= set(legacy)
    assert not any(k.startswith("encoder.") for k in legacy)
    model = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])
    model.load_state_dict(legacy)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
