"""Worker-count-independent, resumable loaders (pipeline.data.loader)."""

import io
import os

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from pipeline.core.errors import UserError
from pipeline.data.dataset import SegmentationDataset, jitter_strength, train_transform
from pipeline.data.loader import (
    SeededSampler,
    loader_kwargs,
    make_eval_loader,
    make_train_loader,
    resolve_num_workers,
)

SIZE, N, BATCH = 64, 12, 4


def arrays(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, 2, (n, SIZE, SIZE), dtype=np.uint8)


@pytest.fixture(scope="module")
def train_ds() -> SegmentationDataset:
    return SegmentationDataset(*arrays(), transform=train_transform(SIZE, "full"), jitter=jitter_strength("full"))


def epochs(loader, n: int = 2) -> list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """``n`` epochs of (images, masks, colour jitter) batches."""
    return [[tuple(batch) for batch in loader] for _ in range(n)]


def same(a, b) -> bool:
    """Same number of batches, and every image and mask tensor bit-identical."""
    if len(a) != len(b):
        return False
    return all(torch.equal(x, y) for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True))


@pytest.fixture(scope="module")
def reference(train_ds):
    """Two epochs with seed 0 and no workers."""
    return epochs(make_train_loader(train_ds, BATCH, seed=0, num_workers=0, device_type="cpu"))


def test_epochs_shuffle_augment_and_keep_shapes(reference):
    first, second = reference
    assert len(first) == N // BATCH
    assert first[0][0].shape == (BATCH, 3, SIZE, SIZE) and first[0][1].shape == (BATCH, 1, SIZE, SIZE)
    assert not same(first, second)
    plain = SegmentationDataset(*arrays())
    # "full" crops, so no sample equals an unaugmented image, and each sample has its own colour jitter.
    assert not any(
        torch.equal(images[i], plain[j][0]) for images, _, _ in first for i in range(BATCH) for j in range(N)
    )
    jitters = torch.cat([jitter for _, _, jitter in first])
    assert jitters.shape == (N, 6) and len(jitters.unique(dim=0)) == N


def test_two_workers_give_bit_identical_batches(reference, train_ds):
    loader = make_train_loader(train_ds, BATCH, seed=0, num_workers=2, device_type="cpu")
    assert all(same(a, b) for a, b in zip(epochs(loader), reference, strict=True))


def test_seed_decides_order_and_augmentation(reference, train_ds):
    again = epochs(make_train_loader(train_ds, BATCH, seed=0, num_workers=0, device_type="cpu"))
    other = epochs(make_train_loader(train_ds, BATCH, seed=1, num_workers=0, device_type="cpu"))
    assert all(same(a, b) for a, b in zip(again, reference, strict=True))
    assert not same(other[0], reference[0])


def test_sampler_state_resumes_the_next_epoch(reference, train_ds):
    # Run epoch 1 with workers, save, resume in a differently seeded loader without workers.
    loader = make_train_loader(train_ds, BATCH, seed=0, num_workers=2, device_type="cpu")
    list(loader)
    buffer = io.BytesIO()
    torch.save(loader.sampler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["generator"].dtype == torch.uint8
    resumed = make_train_loader(train_ds, BATCH, seed=123, num_workers=0, device_type="cpu")
    resumed.sampler.load_state_dict(state)
    assert same(epochs(resumed, 1)[0], reference[1])


def test_sampler_state_for_another_dataset_size_is_rejected():
    state = SeededSampler(10, seed=0).state_dict()
    with pytest.raises(ValueError, match="10 samples but this dataset has 12"):
        SeededSampler(12, seed=0).load_state_dict(state)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterating_leaves_the_callers_rng_alone(train_ds, num_workers):
    torch.manual_seed(7)
    before = torch.get_rng_state()
    list(make_train_loader(train_ds, BATCH, seed=0, num_workers=num_workers, device_type="cpu"))
    list(make_eval_loader(SegmentationDataset(*arrays()), BATCH, num_workers=num_workers, device_type="cpu"))
    assert torch.equal(torch.get_rng_state(), before)


def test_sampler_yields_a_permutation_with_63_bit_seeds():
    pairs = list(SeededSampler(50, seed=3))
    assert sorted(i for i, _ in pairs) == list(range(50))
    assert all(0 <= s < 2**63 for _, s in pairs) and len({s for _, s in pairs}) == 50
    assert max(s for _, s in pairs) > 2**62  # the whole range is used, not 32 bits


@pytest.mark.parametrize(("n", "batches", "last"), [(12, 3, 4), (10, 2, 4), (3, 1, 3), (4, 1, 4)])
def test_drop_last_only_when_more_samples_than_a_batch(n, batches, last):
    loader = make_train_loader(SegmentationDataset(*arrays(n)), BATCH, seed=0, num_workers=0, device_type="cpu")
    sizes = [len(images) for images, _, _ in loader]
    assert len(sizes) == batches and sizes[-1] == last


class ThreadProbe(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, torch.get_num_threads()])


def test_eval_loader_is_in_order_and_workers_use_one_thread():
    batches = list(make_eval_loader(ThreadProbe(), 3, num_workers=2, device_type="cpu"))
    rows = torch.cat(batches)
    assert [len(b) for b in batches] == [3, 1]  # last partial batch kept
    assert rows[:, 0].tolist() == [0, 1, 2, 3]
    assert rows[:, 1].tolist() == [1, 1, 1, 1]


def test_eval_loader_returns_the_plain_items():
    ds = SegmentationDataset(*arrays(5))
    images, masks, _ = next(iter(make_eval_loader(ds, 5, num_workers=0, device_type="cpu")))
    assert torch.equal(images, torch.stack([ds[i][0] for i in range(5)]))
    assert torch.equal(masks, torch.stack([ds[i][1] for i in range(5)]))


@pytest.mark.parametrize(
    ("value", "device", "cpus", "expected"),
    [
        ("auto", "cuda", 4, 4),
        ("auto", "cuda", 32, 8),
        ("auto", "cpu", 32, 0),
        ("auto", "mps", 32, 0),
        (0, "cuda", 32, 0),
        (3, "cpu", 2, 3),
    ],
)
def test_resolve_num_workers(value, device, cpus, expected):
    assert resolve_num_workers(value, device, cpu_count=cpus) == expected


@pytest.mark.parametrize(
    ("value", "cpus", "nproc", "expected"), [("auto", 32, 2, 8), ("auto", 8, 4, 2), ("auto", 2, 4, 0), (3, 2, 4, 3)]
)
def test_training_processes_share_the_auto_workers(value, cpus, nproc, expected):
    assert resolve_num_workers(value, "cuda", cpu_count=cpus, nproc=nproc) == expected


def test_resolve_num_workers_counts_the_cpus_this_process_may_run_on(monkeypatch):
    # A container or `taskset` gives the process 3 of the machine's 64 CPUs: 3 workers, not 8.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 9}, raising=False)
    assert resolve_num_workers("auto", "cuda") == 3
    assert resolve_num_workers("auto", "cuda", nproc=2) == 1


@pytest.mark.parametrize("value", [-1, "4", "Auto", 2.0, True, None])
def test_resolve_num_workers_rejects(value):
    with pytest.raises(UserError, match=r"^params.yaml: num_workers must be auto or an integer >= 0, got "):
        resolve_num_workers(value, "cuda", cpu_count=4)


def test_loader_kwargs_cuda_pins_and_keeps_workers():
    kwargs = loader_kwargs("cuda", 4)
    assert kwargs["num_workers"] == 4 and kwargs["pin_memory"] is True
    assert kwargs["persistent_workers"] is True and kwargs["prefetch_factor"] >= 1
    assert callable(kwargs["worker_init_fn"])


def test_loader_kwargs_without_workers_or_gpu():
    assert loader_kwargs("cpu", 0) == {"num_workers": 0, "pin_memory": False}
    assert loader_kwargs("cuda", 0) == {"num_workers": 0, "pin_memory": True}
    assert loader_kwargs("cpu", 2)["pin_memory"] is False
