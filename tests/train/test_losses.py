"""Training losses (pipeline/train/losses.py): BCE, soft Dice and their sum for one logit, softmax
cross-entropy, multi-class soft Dice and their sum for C logits, by hand and with ignored pixels (255)
left out of the loss and its gradient; one loss name for both kinds of task."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.data.masks import IGNORE
from pipeline.train.losses import (
    BINARY_LOSSES,
    MULTICLASS_LOSSES,
    bce_dice_loss,
    bce_loss,
    ce_dice_loss,
    ce_loss,
    dice_loss,
    loss_function,
    multiclass_dice_loss,
)


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
    assert (BINARY_LOSSES["ce_dice"], BINARY_LOSSES["dice"], BINARY_LOSSES["ce"]) == (
        bce_dice_loss,
        dice_loss,
        bce_loss,
    )
    assert (MULTICLASS_LOSSES["ce_dice"], MULTICLASS_LOSSES["dice"], MULTICLASS_LOSSES["ce"]) == (
        ce_dice_loss,
        multiclass_dice_loss,
        ce_loss,
    )


def test_losses_backpropagate():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    bce_dice_loss(logits, torch.ones(1, 1, 2, 2)).backward()
    assert (logits.grad < 0).all()  # raising every logit lowers the loss


# --- the ignore label (255), for one logit and for C logits -----------------------------------------

LOSS_FNS = [bce_loss, dice_loss, bce_dice_loss]
MULTICLASS_FNS = [ce_loss, multiclass_dice_loss, ce_dice_loss]


def _with_ignored_column():
    """A 2x3 batch of one image, one logit, whose last column is ignored: random logits, the float
    target, and confident logits of both signs for the ignored column."""
    torch.manual_seed(1)
    logits = torch.randn(1, 1, 2, 3) * 3
    target = torch.tensor([[[[1.0, 0.0, IGNORE], [0.0, 1.0, IGNORE]]]])
    return logits, target, torch.tensor([40.0, -40.0])


def _classes_with_ignored_column():
    """One 2x3 image, 3 classes, the last column ignored: random logits, the uint8 target, and
    confident logits for the ignored column."""
    torch.manual_seed(6)
    logits = torch.randn(1, 3, 2, 3) * 3
    target = torch.tensor([[[[0, 2, IGNORE], [1, 2, IGNORE]]]], dtype=torch.uint8)
    return logits, target, torch.tensor([[40.0, -40.0], [-40.0, 40.0], [0.0, 9.0]])


def _loss_and_gradient(loss_fn, logits, target):
    """``loss_fn``'s value at a copy of ``logits`` and its gradient with respect to them."""
    x = logits.clone().requires_grad_()
    loss = loss_fn(x, target)
    loss.backward()
    return loss, x.grad


IGNORED = [pytest.param(fn, _with_ignored_column, id=fn.__name__) for fn in LOSS_FNS] + [
    pytest.param(fn, _classes_with_ignored_column, id=fn.__name__) for fn in MULTICLASS_FNS
]


@pytest.mark.parametrize(("loss_fn", "data"), IGNORED)
def test_logits_at_ignored_pixels_change_neither_loss_nor_gradient(loss_fn, data):
    logits, target, wild = data()
    other = logits.clone()
    other[..., 2] = wild  # confidently anything at the ignored pixels
    loss, grad = _loss_and_gradient(loss_fn, logits, target)
    loss_other, grad_other = _loss_and_gradient(loss_fn, other, target)
    assert torch.equal(loss, loss_other)
    assert torch.equal(grad, grad_other)
    # Every counted pixel still moves some logit of its own.
    assert (grad[..., 2] == 0).all() and (grad[..., :2] != 0).any(1).all()


@pytest.mark.parametrize(("loss_fn", "data"), IGNORED)
def test_loss_with_ignored_pixels_equals_the_loss_of_the_counted_pixels_alone(loss_fn, data):
    logits, target, _ = data()
    alone = loss_fn(logits[..., :2].contiguous(), target[..., :2].contiguous())
    assert loss_fn(logits, target).item() == pytest.approx(alone.item(), rel=1e-6)
    assert loss_fn(logits, target.float()).item() == pytest.approx(alone.item(), rel=1e-6)


@pytest.mark.parametrize(("loss_fn", "data"), IGNORED)
def test_losses_compute_in_fp32_from_half_inputs(loss_fn, data):
    logits, target, _ = data()
    half = loss_fn(logits.half(), target.half())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(loss_fn(logits.half().float(), target).item(), rel=1e-6)


@pytest.mark.parametrize(("loss_fn", "logits"), [(bce_loss, 1)] + [(fn, 3) for fn in MULTICLASS_FNS])
def test_the_loss_of_an_all_ignored_batch_is_zero_with_zero_gradient(loss_fn, logits):
    loss, grad = _loss_and_gradient(loss_fn, torch.randn(2, logits, 2, 2) * 5, torch.full((2, 1, 2, 2), float(IGNORE)))
    assert loss.item() == 0.0
    assert (grad == 0).all()


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

    ours, grad = _loss_and_gradient(loss_fn, logits, target)
    reference, reference_grad = _loss_and_gradient(plain, logits, target)
    assert torch.equal(ours, reference)
    assert torch.equal(grad, reference_grad)


# --- multi-class: softmax over C logits, class-index targets ----------------------------------------


def test_loss_function_gives_the_binary_losses_for_one_logit_and_the_softmax_ones_for_more():
    # One logit: exactly the binary functions, so the binary task trains as before the renaming.
    assert [loss_function(n, 1) for n in ("ce_dice", "dice", "ce")] == [bce_dice_loss, dice_loss, bce_loss]
    for logits in (2, 3, 21):
        assert [loss_function(n, logits) for n in ("ce_dice", "dice", "ce")] == [
            ce_dice_loss,
            multiclass_dice_loss,
            ce_loss,
        ]
    with pytest.raises(KeyError):
        loss_function("bce_dice", 1)
    with pytest.raises(ValueError, match="at least 1"):
        loss_function("ce", 0)


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_ce_dice_matches_hand_computation():
    # One 2x2 image, 3 classes; logits per pixel (class 0, 1, 2) and the true class of each pixel.
    pixels = [([2.0, 0.0, -1.0], 0), ([0.0, 1.0, 0.0], 1), ([1.0, 1.0, 1.0], 2), ([-1.0, 0.0, 3.0], 2)]
    probs = [_softmax(row) for row, _ in pixels]
    ce = sum(-math.log(p[c]) for p, (_, c) in zip(probs, pixels, strict=True)) / 4
    dice = []
    for k in range(3):  # per class: (2 Σ p_k t_k + 1) / (Σ p_k + Σ t_k + 1)
        inter = sum(p[k] for p, (_, c) in zip(probs, pixels, strict=True) if c == k)
        dice.append((2 * inter + 1) / (sum(p[k] for p in probs) + sum(c == k for _, c in pixels) + 1))
    expected = ce + 1 - sum(dice) / 3
    logits = torch.tensor([row for row, _ in pixels]).T.reshape(1, 3, 2, 2)
    target = torch.tensor([c for _, c in pixels], dtype=torch.uint8).reshape(1, 1, 2, 2)
    assert ce_loss(logits, target).item() == pytest.approx(ce, rel=1e-6)
    assert ce_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_ce_is_torchs_cross_entropy_without_ignored_pixels_for_any_target_dtype():
    torch.manual_seed(3)
    logits, target = torch.randn(2, 4, 5, 3) * 3, torch.randint(0, 4, (2, 1, 5, 3))
    reference = F.cross_entropy(logits, target[:, 0]).item()
    for dtype in (torch.uint8, torch.int64, torch.float32):
        assert ce_loss(logits, target.to(dtype)).item() == pytest.approx(reference, rel=1e-6)
        assert ce_dice_loss(logits, target.to(dtype)).item() == ce_dice_loss(logits, target).item()


def test_two_logit_ce_is_the_bce_of_their_difference():
    # softmax([0, x])[1] = sigmoid(x): the softmax path agrees with the binary one on two classes.
    torch.manual_seed(4)
    x, target = torch.randn(2, 1, 3, 3) * 3, (torch.rand(2, 1, 3, 3) > 0.5).float()
    assert ce_loss(torch.cat([torch.zeros_like(x), x], 1), target).item() == pytest.approx(
        bce_loss(x, target).item(), rel=1e-6
    )


def test_multiclass_dice_is_zero_when_right_and_near_one_when_all_wrong():
    torch.manual_seed(5)
    target = torch.randint(0, 3, (2, 1, 16, 16))
    right = F.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float() * 50
    assert multiclass_dice_loss(right, target).item() < 1e-6
    wrong = right.roll(1, dims=1)  # all the mass on the next class
    assert multiclass_dice_loss(wrong, target).item() > 0.99


def test_ce_dice_backpropagates_towards_the_true_class():
    x = torch.zeros(1, 3, 1, 2, requires_grad=True)
    ce_dice_loss(x, torch.tensor([[[[0, 2]]]])).backward()
    # Raising the true class's logit lowers the loss; raising another's raises it.
    assert x.grad[0, 0, 0, 0] < 0 and x.grad[0, 2, 0, 1] < 0 and x.grad[0, 1].gt(0).all()


# --- class weights ---------------------------------------------------------------------------------


def test_weighted_cross_entropy_is_the_weighted_mean_of_the_counted_pixels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[[0, 1], [2, IGNORE]]]], dtype=torch.uint8)
    weights = torch.tensor([1.0, 4.0, 0.5])
    terms = -torch.log_softmax(logits, 1)[0, [0, 1, 2], [0, 0, 1], [0, 1, 0]]  # the three counted pixels
    expected = (terms * weights).sum() / weights.sum()
    assert ce_loss(logits, target, weights).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ce_loss(logits, target, torch.ones(3)).item() == pytest.approx(ce_loss(logits, target).item(), rel=1e-6)


def test_binary_class_weights_weigh_the_positive_term_by_w1_over_w0():
    logits = torch.tensor([[[[2.0, -1.0, 0.5]]]])
    target = torch.tensor([[[[1.0, 0.0, float(IGNORE)]]]])
    positive, negative = F.softplus(torch.tensor(-2.0)), F.softplus(torch.tensor(-1.0))  # -log p, -log(1 - p)
    expected = (3.0 * positive + negative) / 2  # w1 / w0 = 6 / 2; two counted pixels
    assert bce_loss(logits, target, torch.tensor([2.0, 6.0])).item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_multiclass_dice_averages_over_the_classes_present_only():
    logits = torch.zeros(1, 3, 2, 2)  # every class 1/3 everywhere
    target = torch.tensor([[[[0, 0], [1, 1]]]], dtype=torch.uint8)  # class 2 absent
    per_class = 1.0 - (2.0 * (2 / 3) + 1.0) / (4 / 3 + 2.0 + 1.0)  # classes 0 and 1 alike
    assert multiclass_dice_loss(logits, target).item() == pytest.approx(per_class, rel=1e-6)


def test_weights_reach_the_cross_entropy_and_the_dice_loss_refuses_them():
    weights = torch.tensor([1.0, 3.0, 1.0])
    logits, target = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 1, 4, 4), dtype=torch.uint8)
    weighted = loss_function("ce_dice", 3, weights)(logits, target)
    assert weighted.item() == pytest.approx(
        (ce_loss(logits, target, weights) + multiclass_dice_loss(logits, target)).item()
    )
    with pytest.raises(ValueError, match="dice loss has none"):
        loss_function("dice", 3, weights)
