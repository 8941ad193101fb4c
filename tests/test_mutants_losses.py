"""Behaviour the mutation run (docs/mutation.md) found untested in pipeline/train/losses.py."""

import math

import pytest
import torch

from pipeline.data.masks import IGNORE
from pipeline.train.losses import bce_loss


@pytest.mark.parametrize("counted", [1, 2, 3])
def test_bce_is_the_mean_over_the_counted_pixels_however_few(counted):
    # One to three counted pixels (the rest ignored, with wild logits): the loss is their plain mean BCE,
    # including the edge case of a single counted pixel.
    logits = torch.tensor([[[[2.0, -1.0, 0.5, 9.0, -9.0]]]])
    target = torch.tensor([[[[1.0, 1.0, 0.0, IGNORE, IGNORE]]]])
    target[..., counted:3] = IGNORE
    per_pixel = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0)), math.log(1 + math.exp(0.5))]
    assert bce_loss(logits, target).item() == pytest.approx(sum(per_pixel[:counted]) / counted, rel=1e-6)
