"""Weight initialisation (pipeline/models/init.py): He et al.'s scheme, zero-init of residual blocks, and
PyTorch's defaults left alone."""

import math

import pytest
import torch
from torch import nn

from pipeline.core.constants import INIT_SCHEMES
from pipeline.core.errors import UserError
from pipeline.models.blocks import BasicBlock
from pipeline.models.init import init_weights
from pipeline.models.registry import MODELS, build_model
from pipeline.models.resnet34_unet import ResNet34UNet
from tests.support import TINY_ARCH


def _same_state(a, b):
    b_state = b.state_dict()
    return all(torch.equal(v, b_state[k]) for k, v in a.state_dict().items())


def _std_and_tail(weight):
    w = weight.detach().flatten().double()
    std = w.std().item()
    return w.mean().item(), std, (w.abs() > 2 * std).double().mean().item()


def test_kaiming_draws_conv_weights_from_n_0_2_over_fan_out():
    torch.manual_seed(0)
    model = build_model("resnet34_unet")  # default decoder: the first transposed conv is 512 → 256, 2x2
    init_weights(model, "kaiming")
    # He et al. 2015 eq. 14: std = sqrt(2 / fan_out), fan_out = out_channels · kH · kW per input.
    mean, std, tail = _std_and_tail(model.encoder.layer4[2].conv2.weight)  # 512 → 512, 3x3: 2.4 M draws
    assert std == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.01)
    assert abs(mean) < 0.01 * std
    assert tail == pytest.approx(0.0455, abs=0.002)  # a normal, not a uniform (which has no 2-sigma tail)
    # The stem tells fan_out (64 · 49) from fan_in (3 · 49) apart.
    assert _std_and_tail(model.encoder.conv1.weight)[1] == pytest.approx(math.sqrt(2 / (64 * 49)), rel=0.05)
    # Transposed conv weight is (in, out, kH, kW); its fan_out is out · kH · kW = 256 · 4.
    up = model.ups[0].up
    assert tuple(up.weight.shape) == (512, 256, 2, 2)
    assert _std_and_tail(up.weight)[1] == pytest.approx(math.sqrt(2 / (256 * 4)), rel=0.02)


def test_kaiming_gives_the_head_unit_gain_fan_in_weights():
    torch.manual_seed(0)
    model = ResNet34UNet(out_channels=1024, decoder_channels=[16, 8, 8, 8, 64])  # 64 · 1024 head weights
    init_weights(model, "kaiming")
    assert _std_and_tail(model.head.weight)[1] == pytest.approx(1 / math.sqrt(64), rel=0.02)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("bilinear", [False, True])
def test_kaiming_sets_batchnorm_to_one_zero_and_conv_biases_to_zero(name, bilinear):
    torch.manual_seed(0)
    model = build_model(name, bilinear=bilinear, **TINY_ARCH[name])
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert len(biases) == {"unet": 4, "resnet34_unet": 5}[name] + 1  # one per decoder upsampling, the head
    with torch.no_grad():
        for p in [*biases, *(m.weight for m in norms), *(m.bias for m in norms)]:
            p.uniform_(0.5, 1.5)  # anything but the target values
    init_weights(model, "kaiming")
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in biases)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_zero_init_residual_zeroes_the_last_batchnorm_of_every_block(scheme):
    torch.manual_seed(0)
    model = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])
    torch.manual_seed(0)
    fresh = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])
    init_weights(model, scheme, zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert all(torch.equal(b.bn2.weight, torch.zeros(b.bn2.num_features)) for b in blocks)
    assert all(torch.equal(b.bn1.weight, torch.ones(b.bn1.num_features)) for b in blocks)
    zeroed = {f"{name}.bn2.weight" for name, m in model.named_modules() if isinstance(m, BasicBlock)}
    if scheme == "default":  # nothing else moved
        fresh_state = fresh.state_dict()
        assert all(torch.equal(v, fresh_state[k]) for k, v in model.state_dict().items() if k not in zeroed)


def test_zero_init_residual_makes_every_block_relu_of_its_shortcut():
    # Goyal et al. 2017: with bn2's weight at 0 a block computes relu(shortcut(x)), whatever its convs.
    torch.manual_seed(0)
    model = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])
    init_weights(model, "kaiming", zero_init_residual=True)
    model.train()  # batch statistics: the residual branch must vanish without help from running stats
    with torch.no_grad():
        for name, block in model.named_modules():
            if isinstance(block, BasicBlock):
                x = torch.randn(2, block.conv1.in_channels, 4, 4)
                shortcut = x if block.downsample is None else block.downsample(x)
                torch.testing.assert_close(block(x), torch.relu(shortcut), rtol=0, atol=0, msg=name)
        # layer1 has no projection, so on non-negative input (after the stem's ReLU) it is the identity.
        x = torch.rand(2, 64, 16, 16)
        assert torch.equal(model.encoder.layer1(x), x)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_scheme_leaves_the_model_as_pytorch_built_it(name):
    torch.manual_seed(0)
    model = build_model(name, **TINY_ARCH[name])
    torch.manual_seed(0)
    fresh = build_model(name, **TINY_ARCH[name])
    init_weights(model, "default")
    assert _same_state(model, fresh)
    init_weights(model, "kaiming")  # the comparison can fail
    assert not _same_state(model, fresh)


def test_unknown_init_scheme_lists_the_valid_ones():
    with pytest.raises(UserError, match="'xavier'.*valid names: default, kaiming"):
        init_weights(build_model("unet", **TINY_ARCH["unet"]), "xavier")


def test_zero_init_residual_on_the_unet_is_refused_and_changes_nothing():
    model = build_model("unet", **TINY_ARCH["unet"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="zero_init_residual: UNet has no residual blocks.*resnet34_unet"):
        init_weights(model, "kaiming", zero_init_residual=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
