"""One training epoch (pipeline/train/loop.py): gradient accumulation gives the gradient of one big
batch, no batch is dropped from the groups, gradient clipping bounds the update, the moving average of
the weights is the one worked out by hand, a step reads nothing from the device (but for that average's
step count) and time/data_wait counts only the wait for the loader."""

import collections
import contextlib

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

import pipeline.train.loop as loop
from pipeline.data.colour import IDENTITY, draw_jitter
from pipeline.models.registry import build_model
from pipeline.train.loop import Batch, TrainStep, accumulation_groups, train_epoch
from pipeline.train.losses import bce_loss, loss_function
from pipeline.train.schedules import LrSchedule, make_optimizer
from pipeline.train.setup import weight_average
from tests.support import TINY_ARCH, FakeClock

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


# --- a step that reads nothing from the device, and what time/data_wait measures --------------------


class DeviceReads(TorchDispatchMode):
    """Counts the ops of a training step that make the host wait for the device on a GPU: a scalar read
    (``.item()``, ``bool()``, ``int()`` of a tensor all dispatch ``aten._local_scalar_dense``), a tensor
    built from Python data (``torch.tensor(...)``, ``aten.lift_fresh``: on a GPU a blocking copy from pageable
    memory) and a copy to the host from another device (``_to_copy``/``copy_`` to the CPU). On a CPU-only run
    every tensor is on the CPU, so that last kind cannot occur here; the first two are counted all the same."""

    def __init__(self):
        super().__init__()
        self.reads = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__  # e.g. "_local_scalar_dense.default"
        to_host = (name.startswith("_to_copy") and str(kwargs.get("device", args[0].device)) == "cpu") or (
            name.startswith("copy_") and args[0].device.type == "cpu"
        )
        if name.startswith(("_local_scalar_dense", "lift_fresh")) or (to_host and args[-1].device.type != "cpu"):
            self.reads[name] += 1
        return func(*args, **kwargs)


def _unet_epoch(batches, reads=None, ema=0.0):
    """One epoch of a tiny real UNet over ``batches`` batches of 2 jittered 32 px images, with fused AdamW
    (as set_up builds on CUDA: its step count stays on the device), clipping, the ce_dice loss and a moving
    average of the weights with decay ``ema`` (0 = none)."""
    torch.manual_seed(0)
    model = build_model("unet", 1, **TINY_ARCH["unet"])
    images = torch.randint(0, 256, (2 * batches, 3, 32, 32), dtype=torch.uint8)
    masks = (torch.rand(2 * batches, 1, 32, 32) > 0.5).to(torch.uint8)
    jitter = torch.stack([draw_jitter(0.2) for _ in range(2 * batches)])
    loader = DataLoader(TensorDataset(images, masks, jitter), batch_size=2)
    optimizer = make_optimizer("adamw", model.parameters(), 1e-3, 1e-4, fused=True)
    schedule = LrSchedule("cosine", optimizer, batches, 2, warmup_epochs=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    move = Batch(torch.device("cpu"), False, torch.contiguous_format, jitter=True)
    average = weight_average(model, ema)
    step = TrainStep(loss_function("ce_dice", 1), optimizer, schedule, scaler, move, None, 1, 1.0, average)
    with reads or contextlib.nullcontext():
        return train_epoch(model, loader, step)


def test_a_training_step_reads_nothing_from_the_device():
    _unet_epoch(1)  # builds what is built once (the colour constants), so both counts below start alike
    two, five = DeviceReads(), DeviceReads()
    _unet_epoch(2, two)
    _unet_epoch(5, five)
    assert two.reads["_local_scalar_dense.default"] > 0  # the epoch's end reads its sums: the mode sees reads
    assert dict(five.reads) == dict(two.reads)  # 3 more steps, not one more read


def test_the_moving_average_of_the_weights_reads_only_its_step_count_twice_a_step():
    # torch's AveragedModel.update_parameters reads its n_averaged (on the device) with bool(n_averaged == 0)
    # and `n_averaged > 0`; pytorch/pytorch PRs 157705 and 175085 proposed a host-side count instead. A torch
    # that drops the reads fails this test: then the notes in pipeline/train/loop.py and docs/training.md go.
    _unet_epoch(1, ema=0.9)
    two, five = DeviceReads(), DeviceReads()
    _unet_epoch(2, two, ema=0.9)
    _unet_epoch(5, five, ema=0.9)
    assert five.reads - two.reads == collections.Counter({"_local_scalar_dense.default": 3 * 2})
    assert two.reads - five.reads == collections.Counter()


def test_the_moving_average_after_three_steps_is_the_one_worked_out_by_hand():
    # A tiny real UNet (with BatchNorm), one optimiser step per epoch of one batch. get_ema_multi_avg_fn's
    # rule: the first update copies the weights, each later one gives decay * average + (1 - decay) * weights.
    decay = 0.6
    torch.manual_seed(0)
    model = build_model("unet", 1, **TINY_ARCH["unet"])
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    masks = (torch.rand(2, 1, 32, 32) > 0.5).to(torch.uint8)
    loader = DataLoader(TensorDataset(images, masks, torch.tensor([IDENTITY] * 2)), batch_size=2)
    optimizer = make_optimizer("adamw", model.parameters(), 1e-2, 0.0)
    average = weight_average(model, decay)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(bce_loss, optimizer, LrSchedule("constant", optimizer, 1, 3), scaler, CPU, None, ema=average)
    after = []
    for _ in range(3):
        train_epoch(model, loader, step)
        after.append({k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()})
    expected = after[0]
    for weights in after[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    got = average.averaged.module.state_dict()
    assert {k.rsplit(".", 1)[1] for k in expected} >= {"weight", "bias", "running_mean", "running_var"}
    for key, value in expected.items():
        # torch computes it as a lerp, average + (1 - decay) * (weights - average): equal to rounding.
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert not all(torch.equal(got[k], after[-1][k]) for k in expected)  # an average, not the last weights
    assert average.averaged.n_averaged.item() == 3


def test_every_copy_of_a_batch_to_the_device_is_non_blocking():
    # The meta device stands in for a GPU: each copy to it dispatches one _to_copy with its non_blocking flag.
    copies = []

    class Copies(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.__name__.startswith("_to_copy") and kwargs.get("device") == torch.device("meta"):
                copies.append(kwargs.get("non_blocking", False))
            return func(*args, **kwargs)

    move = Batch(torch.device("meta"), True, torch.contiguous_format, jitter=True)
    images, masks = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with Copies():
        images, masks = move(images, masks, torch.tensor([IDENTITY] * 2))
    assert copies == [True, True, True]  # images, jitter, masks
    assert images.device.type == masks.device.type == "meta"


def test_data_wait_is_the_loaders_share_not_the_steps(monkeypatch):
    # The loader takes 1 s a batch, the move to the device 100 s and the loss 10 s (a GPU-bound step):
    # only the loader's second is waiting for data.
    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)

    class SlowLoader:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for batch in self.loader:
                clock.now += 1.0
                yield batch

    class SlowMove(Batch):
        def __call__(self, *batch):
            clock.now += 100.0
            return super().__call__(*batch)

    def slow_loss(logits, target):
        clock.now += 10.0
        return bce_loss(logits, target)

    images, masks = torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    loader = SlowLoader(DataLoader(TensorDataset(images, masks, torch.tensor([IDENTITY] * 6)), batch_size=2))
    model = NoNorm()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = LrSchedule("constant", optimizer, 3, 1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    move = SlowMove(torch.device("cpu"), False, torch.contiguous_format)
    stats = train_epoch(model, loader, TrainStep(slow_loss, optimizer, schedule, scaler, move, None))
    assert (stats.data_seconds, stats.seconds) == (3.0, 333.0)
