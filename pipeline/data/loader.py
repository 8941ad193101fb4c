"""DataLoaders whose batches do not depend on the worker count, with a resumable data order.

Every training sample gets its own seed, drawn in the main process together with the epoch's
permutation by :class:`SeededSampler`; :class:`SeededDataset` seeds torch's CPU RNG with it before
running the wrapped dataset's augmentation. So a sample's augmentation depends only on (index,
seed), not on which worker process draws it or in which order, and the sampler's generator state
after an epoch is the whole data-order and augmentation state of the run. With several training
processes each takes its share of every global batch of that same order (:func:`shard_positions`),
so the global batches, and every sample's seed, are the same whatever the number of processes.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.core.device import usable_cpus
from pipeline.core.errors import UserError
from pipeline.data.geometry import same_shape_runs

# More workers than this rarely speed up a single GPU's input pipeline and each one holds a
# process's worth of memory and prefetched batches.
MAX_AUTO_WORKERS = 8
# Batches each worker keeps ready: the workers already run in parallel, so a small buffer absorbs
# jitter; a larger one only holds more (pinned) memory.
PREFETCH_FACTOR = 2
# Per-sample seeds are non-negative int64, i.e. 63 random bits.
SEED_BOUND = 2**63 - 1


def resolve_num_workers(value: int | str, device_type: str, cpu_count: int | None = None, nproc: int = 1) -> int:
    """The DataLoader worker count of each of ``nproc`` training processes on this machine for the
    ``num_workers`` param.

    "auto" gives ``min(8, cpu_count // nproc)`` on "cuda" (``cpu_count`` defaults to the CPUs this
    process may run on, :func:`~pipeline.core.device.usable_cpus`; the processes share them) and 0 on
    any other device: there the same cores run the model, so workers only compete with it. An int >= 0
    is returned as is. Raises UserError for anything else (a bool, a negative int, another string, a float).
    """
    if value == "auto":
        if device_type != "cuda":
            return 0
        cpus = cpu_count if cpu_count is not None else usable_cpus()
        return min(MAX_AUTO_WORKERS, cpus // nproc)
    # bool is an int subclass, but `num_workers: yes` in YAML is a mistake, not one worker.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UserError(f"params.yaml: num_workers must be auto or an integer >= 0, got {value!r}")


def _worker_init(worker_id: int) -> None:
    # A worker inherits torch's intra-op thread count (one per core); N workers x that many threads
    # oversubscribe the cores and starve the main process that feeds the GPU. The parallelism comes
    # from the workers themselves. Current torch also does this in its worker loop, but that is an
    # implementation detail, so it is stated here.
    torch.set_num_threads(1)


def loader_kwargs(device_type: str, num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments decided by the device and worker count.

    ``num_workers`` always; ``pin_memory`` True only on "cuda" (page-locked host memory makes the
    host-to-GPU copy faster and lets it overlap compute; elsewhere it is wasted). Only when
    ``num_workers`` > 0 (DataLoader rejects them otherwise): ``persistent_workers`` (no process
    start-up each epoch), ``prefetch_factor`` (2 batches per worker) and ``worker_init_fn`` (one
    torch thread per worker).
    """
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": device_type == "cuda"}
    if num_workers > 0:
        kwargs |= {"persistent_workers": True, "prefetch_factor": PREFETCH_FACTOR, "worker_init_fn": _worker_init}
    return kwargs


def shard_positions(num_samples: int, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
    """Positions, in an epoch's order of ``num_samples`` samples, that rank ``rank`` of ``world`` trains on.

    The order is cut into global batches of ``batch_size`` (a multiple of ``world``) and each global
    batch into ``world`` equal consecutive slices; rank r takes slice r of each. So the ranks
    together train on exactly the batches one process would. The last incomplete global batch is
    dropped when there is more than one batch's worth of samples (a final batch of one image breaks
    BatchNorm in train mode); otherwise the one global batch holds all samples, cut to a multiple
    of ``world``. E.g. 10 samples, batch 4, 2 ranks: rank 0 gets [0, 1, 4, 5], rank 1 [2, 3, 6, 7].
    Raises UserError if that leaves the ranks nothing (fewer samples than ranks).
    """
    if num_samples > batch_size:
        batches, share = num_samples // batch_size, batch_size // world
    else:
        batches, share = 1, num_samples // world
    if share == 0:
        raise UserError(
            f"the train split has {num_samples} images, fewer than the training processes, "
            f"train.nnodes x train.nproc ({world}); lower them"
        )
    stride = share * world
    return [start + rank * share + i for start in range(0, batches * stride, stride) for i in range(share)]


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffling sampler that yields ``(index, seed)`` pairs, for :class:`SeededDataset`.

    Each epoch (each ``iter``) draws a permutation of ``range(num_samples)`` and one seed in
    [0, 2**63 - 1) per sample from the ``torch.Generator`` it owns, seeded with ``seed``, and yields
    the pairs at :func:`shard_positions` (``batch_size`` None = one batch of all: every pair). It
    runs in the main process, so its generator state between epochs is the complete data-order and
    augmentation state: save :meth:`state_dict` after an epoch and :meth:`load_state_dict` it into a
    fresh sampler to continue with the identical next epoch. The draws do not depend on ``rank`` or
    ``world``, so every rank sees the same order and seeds and takes its own share.
    """

    def __init__(self, num_samples: int, seed: int, batch_size: int | None = None, rank: int = 0, world: int = 1):
        self.num_samples = num_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.positions = shard_positions(num_samples, batch_size or num_samples, rank, world)

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.num_samples, generator=self.generator).tolist()
        seeds = torch.randint(SEED_BOUND, (self.num_samples,), generator=self.generator).tolist()
        return ((order[p], seeds[p]) for p in self.positions)

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": uint8 tensor (the generator state), "num_samples": int}``.

        Loadable with ``torch.load(..., weights_only=True)``. Take it between epochs: the draws for
        an epoch happen when its first batch is requested.
        """
        return {"generator": self.generator.get_state(), "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. Raises ValueError if it was saved for another number of
        samples (the permutations would not continue the saved run)."""
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"sampler state is for {state['num_samples']} samples but this dataset has {self.num_samples}"
            )
        self.generator.set_state(state["generator"])


class SeededDataset(Dataset):
    """Wraps ``base`` so that ``self[(index, seed)]`` is ``base[index]`` computed under ``seed``.

    The item is whatever ``base`` returns. The seed applies to torch's CPU RNG, which is where
    torchvision.transforms.v2 draws its random parameters; the caller's RNG state is restored
    afterwards, so iterating never perturbs the training process's own random stream.
    """

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed would also reseed (and, in the main process
            # on a GPU run, clobber) the CUDA generators, which fork_rng(devices=[]) does not restore.
            torch.default_generator.manual_seed(seed)
            return self.base[index]


def _private_generator(seed: int) -> torch.Generator:
    # DataLoader draws its workers' base seed from this generator on every iter(); without one it
    # draws from the global RNG and so shifts the caller's random stream. Per-sample seeding makes
    # the worker seeds irrelevant to the batches.
    return torch.Generator().manual_seed(seed)


def make_train_loader(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int, device_type: str, rank: int = 0, world: int = 1
) -> DataLoader:
    """Shuffled, per-sample-seeded training loader over ``dataset`` (a map-style dataset of length N)
    for rank ``rank`` of ``world`` training processes; ``batch_size`` is the global batch.

    Batches are ``default_collate`` of ``dataset``'s items, e.g. (images float32 (b, 3, S, S), masks
    float32 (b, 1, S, S)) for :class:`pipeline.data.dataset.SegmentationDataset` with b =
    ``batch_size / world``: this rank's slice of each global batch (:func:`shard_positions`; the
    last incomplete global batch is dropped when N > ``batch_size``), bit-identical for any
    ``num_workers``. ``loader.sampler`` is the :class:`SeededSampler` (seeded with ``seed``): save
    ``loader.sampler.state_dict()`` after an epoch and call ``loader.sampler.load_state_dict(state)``
    on a new loader before iterating to resume with the same order and augmentation. Settings per
    device as :func:`loader_kwargs`.
    """
    return DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size // world,
        sampler=SeededSampler(len(dataset), seed, batch_size, rank, world),
        generator=_private_generator(seed),
        **loader_kwargs(device_type, num_workers),
    )


def make_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int, device_type: str, shapes: np.ndarray | None = None
) -> DataLoader:
    """Loader over ``dataset`` in index order, keeping the last partial batch; settings as
    :func:`loader_kwargs`. Meant for datasets without random transforms (nothing is seeded). ``shapes``
    (optional) int (N, 2), each item's (height, width): batches then hold items of one shape only, shape by
    shape (:func:`~pipeline.data.geometry.same_shape_runs`), so items of different sizes need no padding
    to one; the order changes, which a sum over the set (a confusion matrix) does not see."""
    kwargs = loader_kwargs(device_type, num_workers)
    if shapes is None:
        return DataLoader(dataset, batch_size=batch_size, generator=_private_generator(0), **kwargs)
    batches = [
        rows[start : start + batch_size]
        for rows in same_shape_runs(shapes).values()
        for start in range(0, len(rows), batch_size)
    ]
    return DataLoader(dataset, batch_sampler=batches, generator=_private_generator(0), **kwargs)
