"""One training epoch (pipeline/train/loop.py): gradient accumulation gives the gradient of one big
batch, no batch is dropped from the groups, and gradient clipping bounds the update."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.data.colour import IDENTITY
from pipeline.train.loop import Batch, TrainStep, accumulation_groups, train_epoch
from pipeline.train.losses import bce_loss
from pipeline.train.schedules import LrSchedule

CPU = Batch(torch.device("cpu"), False, torch.contiguous_format)


class NoNorm(nn.Module):
    """A conv net without BatchNorm, so a batch's gradient does not depend on how it is split; its input is
    multiplied by ``scale`` first (large inputs, large gradients)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))
        self.scale = scale

    def forward(self, x):
        return self.net(x * self.scale)


def _one_update(batch_size, accumulate_steps, grad_clip=0.0, scale=1.0):
    """Parameters before and after one epoch of SGD (lr 1, no momentum) over 8 fixed images."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8)
    masks = (torch.rand(8, 1, 8, 8, generator=g) > 0.5).to(torch.uint8)
    jitter = torch.tensor([IDENTITY] * 8)
    model = NoNorm(scale)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0)
    loader = DataLoader(TensorDataset(images, masks, jitter), batch_size=batch_size)
    groups = len(accumulation_groups(len(loader), accumulate_steps))
    schedule = LrSchedule("constant", optimizer, groups, 2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(bce_loss, optimizer, schedule, scaler, CPU, None, accumulate_steps, grad_clip)
    stats = train_epoch(model, loader, step)
    return before, [p.detach() for p in model.parameters()], stats


def test_two_accumulated_batches_of_4_give_the_gradient_of_one_batch_of_8():
    before, big, stats_big = _one_update(8, 1)
    _, accumulated, stats_acc = _one_update(4, 2)
    for b, x, y in zip(before, big, accumulated, strict=True):
        assert not torch.equal(b, x)  # an update happened
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert stats_big.loss == pytest.approx(stats_acc.loss, abs=1e-6)


def test_accumulation_groups_keep_every_batch():
    assert accumulation_groups(10, 4) == [4, 4, 2]
    assert accumulation_groups(8, 4) == [4, 4]
    assert accumulation_groups(3, 1) == [1, 1, 1]


def test_gradient_clipping_bounds_the_update_norm():
    before, unclipped, _ = _one_update(8, 1, scale=10.0)
    norm = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, unclipped, strict=True)))
    assert norm > 0.5  # so a max norm of 0.05 really clips
    before, clipped, _ = _one_update(8, 1, grad_clip=0.05, scale=10.0)
    # With SGD at lr 1 the update is the (clipped) gradient itself.
    norm = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, clipped, strict=True)))
    assert norm == pytest.approx(0.05, rel=1e-4)
