"""The model registry (pipeline/models/registry.py): every model gives one logit channel at the input
resolution, refuses sizes it cannot take, and bad names and options are one-line errors."""

import pytest
import torch

from pipeline.core.errors import UserError
from pipeline.models.registry import MODELS, build_model
from tests.support import TINY_ARCH


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("bilinear", [False, True])
def test_output_is_one_logit_channel_at_input_resolution(name, bilinear):
    torch.manual_seed(0)
    model = build_model(name, bilinear=bilinear, **TINY_ARCH[name]).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, 64, 96)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 3, 64, 80)])
def test_rejects_sizes_that_are_not_multiples_of_32(name, shape):
    model = build_model(name, **TINY_ARCH[name])
    with pytest.raises(ValueError, match="multiple"):
        model(torch.randn(*shape))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rejects_input_without_batch_dimension(name):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        build_model(name, **TINY_ARCH[name])(torch.randn(3, 64, 64))


def test_registry_lists_valid_names_for_unknown_model():
    with pytest.raises(ValueError, match="resnet34_unet, unet"):
        build_model("segformer")


def test_registry_names_the_bad_option_and_the_valid_ones():
    with pytest.raises(UserError, match="widht.*base_channels"):
        build_model("unet", widht=8)


def test_registry_turns_a_bad_option_value_into_a_user_error():
    with pytest.raises(UserError, match="decoder_channels"):
        build_model("resnet34_unet", decoder_channels=[8, 8])


def test_model_options_accept_a_list_for_a_tuple_default():
    # params.yaml gives decoder_channels as a YAML list where the default is a tuple: the list builds
    # the model it names, which runs.
    model = build_model("resnet34_unet", decoder_channels=[8, 8, 8, 4, 4]).eval()
    assert [up.conv[-3].out_channels for up in model.ups] == [8, 8, 8, 4, 4]
    assert model.head.in_channels == 4
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 64)).shape == (2, 1, 32, 64)
