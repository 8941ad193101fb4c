import pytest
import torch
import torchvision

from pipeline.errors import UserError
from pipeline.models import MODELS, build_model

TINY = {"unet": {"base_channels": 4}, "resnet34_unet": {"decoder_channels": [16, 8, 8, 4, 4]}}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("bilinear", [False, True])
def test_output_is_one_logit_channel_at_input_resolution(name, bilinear):
    torch.manual_seed(0)
    model = build_model(name, bilinear=bilinear, **TINY[name]).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, 64, 96)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 3, 64, 80)])
def test_rejects_sizes_that_are_not_multiples_of_32(name, shape):
    model = build_model(name, **TINY[name])
    with pytest.raises(ValueError, match="multiple"):
        model(torch.randn(*shape))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rejects_input_without_batch_dimension(name):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        build_model(name, **TINY[name])(torch.randn(3, 64, 64))


def test_registry_lists_valid_names_for_unknown_model():
    with pytest.raises(ValueError, match="resnet34_unet, unet"):
        build_model("segformer")


def test_registry_names_the_bad_option_and_the_valid_ones():
    with pytest.raises(UserError, match="widht.*base_channels"):
        build_model("unet", widht=8)


def test_registry_turns_a_bad_option_value_into_a_user_error():
    with pytest.raises(UserError, match="decoder_channels"):
        build_model("resnet34_unet", decoder_channels=[8, 8])


def test_resnet34_encoder_matches_torchvision_resnet34_parameter_for_parameter():
    # Same layer shapes in the same order as the reference implementation (minus its fc classifier).
    ours = build_model("resnet34_unet")
    encoder = [p.shape for n, p in ours.named_parameters() if n.startswith(("stem", "layers"))]
    reference = [p.shape for n, p in torchvision.models.resnet34().named_parameters() if not n.startswith("fc")]
    assert encoder == reference


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
