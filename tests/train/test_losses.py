"""Training losses (pipeline/train/losses.py): BCE, soft Dice and their sum, by hand and with ignored
pixels (255) left out of the loss and its gradient."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.data.masks import IGNORE
from pipeline.train.losses import LOSSES, bce_dice_loss, bce_loss, dice_loss


def test_dice_loss_matches_hand_computation():
    # p = sigmoid(0) = 0.5 everywhere on 4 pixels, target has 2 ones:
    # (2 * 1.0 + 1) / (2.0 + 2 + 1) = 3/5 → loss 0.4
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert dice_loss(logits, target).item() == pytest.approx(0.4)


def test_dice_loss_is_near_zero_for_confident_correct_logits_and_near_one_for_wrong():
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    good = (target * 2 - 1) * 20
    assert dice_loss(good, target).item() < 1e-3
    assert dice_loss(-good, target).item() > 0.6


def test_bce_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_dice_is_the_sum_and_each_loss_is_registered_under_its_name():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    assert bce_dice_loss(logits, target).item() == pytest.approx(
        bce_loss(logits, target).item() + dice_loss(logits, target).item()
    )
    assert (LOSSES["bce_dice"], LOSSES["dice"], LOSSES["bce"]) == (bce_dice_loss, dice_loss, bce_loss)


def test_losses_backpropagate():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    bce_dice_loss(logits, torch.ones(1, 1, 2, 2)).backward()
    assert (logits.grad < 0).all()  # raising every logit lowers the loss


# --- the ignore label (255) ---------------------------------------------------------------------

LOSS_FNS = [bce_loss, dice_loss, bce_dice_loss]


def _with_ignored_column():
    """A 2x3 batch of one image whose last column is ignored; random logits everywhere."""
    torch.manual_seed(1)
    logits = torch.randn(1, 1, 2, 3) * 3
    target = torch.tensor([[[[1.0, 0.0, IGNORE], [0.0, 1.0, IGNORE]]]])
    return logits, target


@pytest.mark.parametrize("loss_fn", LOSS_FNS)
def test_logits_at_ignored_pixels_change_neither_loss_nor_gradient(loss_fn):
    logits, target = _with_ignored_column()
    other = logits.clone()
    other[..., 2] = torch.tensor([40.0, -40.0])  # confidently anything at the ignored pixels
    a, b = logits.clone().requires_grad_(), other.clone().requires_grad_()
    loss_a, loss_b = loss_fn(a, target), loss_fn(b, target)
    loss_a.backward()
    loss_b.backward()
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(a.grad, b.grad)
    assert (a.grad[..., 2] == 0).all() and (a.grad[..., :2] != 0).all()


@pytest.mark.parametrize("loss_fn", LOSS_FNS)
def test_loss_with_ignored_pixels_equals_the_loss_of_the_counted_pixels_alone(loss_fn):
    logits, target = _with_ignored_column()
    alone = loss_fn(logits[..., :2].contiguous(), target[..., :2].contiguous())
    assert loss_fn(logits, target).item() == pytest.approx(alone.item(), rel=1e-6)


def test_bce_and_dice_with_an_ignored_pixel_by_hand():
    logits = torch.tensor([[[[2.0, -1.0, 7.0]]]])
    target = torch.tensor([[[[1.0, 1.0, IGNORE]]]])
    # BCE of the two counted pixels only: mean of log(1 + e^-2) and log(1 + e^1).
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # p = 0.5 on 2x2 pixels, one ignored: Σpt = 0.5, Σp = 1.5, Σt = 1 → 1 - (1 + 1) / (1.5 + 1 + 1) = 3/7.
    target = torch.tensor([[[[1.0, IGNORE], [0.0, 0.0]]]])
    assert dice_loss(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(3 / 7)


@pytest.mark.parametrize("counted", [1, 2, 3])
def test_bce_is_the_mean_over_the_counted_pixels_however_few(counted):
    # One to three counted pixels (the rest ignored, with wild logits): the loss is their plain mean BCE,
    # including the edge case of a single counted pixel.
    logits = torch.tensor([[[[2.0, -1.0, 0.5, 9.0, -9.0]]]])
    target = torch.tensor([[[[1.0, 1.0, 0.0, IGNORE, IGNORE]]]])
    target[..., counted:3] = IGNORE
    per_pixel = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0)), math.log(1 + math.exp(0.5))]
    assert bce_loss(logits, target).item() == pytest.approx(sum(per_pixel[:counted]) / counted, rel=1e-6)


@pytest.mark.parametrize("loss_fn", LOSS_FNS)
def test_losses_without_ignored_pixels_are_bitwise_the_plain_formulas(loss_fn):
    torch.manual_seed(2)
    logits, target = torch.randn(3, 1, 7, 5) * 3, (torch.rand(3, 1, 7, 5) > 0.5).float()

    def plain(x, t):  # the unmasked definitions: mean BCE, whole-batch soft Dice with smoothing 1
        p = torch.sigmoid(x)
        dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
        bce = F.binary_cross_entropy_with_logits(x, t)
        return {bce_loss: bce, dice_loss: dice, bce_dice_loss: bce + dice}[loss_fn]

    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, reference = loss_fn(a, target), plain(b, target)
    ours.backward()
    reference.backward()
    assert torch.equal(ours, reference)
    assert torch.equal(a.grad, b.grad)


def test_bce_of_an_all_ignored_batch_is_zero_with_zero_gradient():
    logits = torch.randn(1, 1, 2, 2, requires_grad=True)
    loss = bce_loss(logits, torch.full((1, 1, 2, 2), float(IGNORE)))
    loss.backward()
    assert loss.item() == 0.0
    assert (logits.grad == 0).all()


def test_losses_compute_in_fp32_from_half_inputs():
    logits, target = _with_ignored_column()
    for loss_fn in LOSS_FNS:
        half = loss_fn(logits.half(), target.half())
        assert half.dtype == torch.float32
        assert half.item() == pytest.approx(loss_fn(logits.half().float(), target).item(), rel=1e-6)
