"""Data-parallel training over ``train.nnodes`` x ``train.nproc`` processes (DistributedDataParallel), and
its launch.

One process (``nnodes`` and ``nproc`` 1) is a plain process: no process group, and every function here is
then a no-op or the identity, so single-process training runs exactly the code and numbers it always did.
Otherwise the training stage starts itself again under torch's launcher (torchrun), ``nproc`` processes
a machine, one a rank: on one machine ``--standalone`` (a free local port); on ``nnodes`` machines, each
running the stage, through torchrun's c10d rendezvous at ``train.rdzv_endpoint``. Each rank joins the
process group (:func:`process_group`), trains on its share of every global batch, and global rank 0
alone writes files.
"""

import contextlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.core.device import usable_cpus
from pipeline.core.errors import UserError
from pipeline.core.orphans import die_with_parent
from pipeline.core.param_training import Train

# The pid of the stage that started torchrun, in the ranks' environment (pipeline.core.orphans).
PARENT_ENV = "PETSEG_PARENT_PID"


def launched(environ: dict[str, str] | None = None) -> bool:
    """True in a process torchrun started (it sets ``WORLD_SIZE`` and ``LOCAL_RANK``); ``environ``
    defaults to ``os.environ``."""
    environ = os.environ if environ is None else environ
    return "WORLD_SIZE" in environ or "LOCAL_RANK" in environ


def backend(device_type: str) -> str:
    """The collective backend for ``device_type``: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device_type == "cuda" else "gloo"


def per_rank_batch(batch_size: int, ranks: int) -> int:
    """Images each of ``ranks`` processes (over all machines) trains on per step, so that ``batch_size``
    stays the global batch. Raises UserError if ``ranks`` does not divide ``batch_size``."""
    if batch_size % ranks:
        raise UserError(
            f"params.yaml: batch_size ({batch_size}) must be a multiple of the training processes, "
            f"train.nnodes x train.nproc ({ranks})"
        )
    return batch_size // ranks


def check_gpus(nproc: int, device_type: str) -> None:
    """Raise UserError if ``nproc`` processes on this machine would need more CUDA GPUs than it has
    (one each); do nothing off CUDA. Counting the GPUs creates no CUDA context."""
    if device_type == "cuda" and nproc > (count := torch.cuda.device_count()):
        raise UserError(f"params.yaml: train.nproc is {nproc} but this machine has {count} GPUs; lower it")


def pin_device(requested: str, environ: dict[str, str] | None = None) -> None:
    """In a rank that torchrun started, make the GPU of its ``LOCAL_RANK`` the current CUDA device.

    Call it before anything else touches CUDA (choosing the device runs a first CUDA call): a call
    before it opens a context, some hundreds of MB, on GPU 0 in every rank. Does nothing in a plain
    process, for the ``device`` param "cpu", or where no CUDA GPU is visible (asking creates no context).
    ``environ`` defaults to ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    if launched(environ) and requested != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(int(environ["LOCAL_RANK"]))


def check_sync_batchnorm(sync_batchnorm: bool, nproc: int, device_type: str) -> None:
    """Raise UserError if ``train.sync_batchnorm`` is asked of several processes off CUDA.

    PyTorch's SyncBatchNorm only synchronises GPU (and XPU/HPU) tensors; on the CPU its forward
    raises in the first training step. With one process there is nothing to synchronise, so the
    option is accepted and changes nothing.
    """
    if sync_batchnorm and nproc > 1 and device_type != "cuda":
        raise UserError(
            f"params.yaml: train.sync_batchnorm needs CUDA GPUs (PyTorch cannot sync BatchNorm on {device_type}); "
            "set it to false"
        )


def torchrun_options(train: Train, run_id: str) -> list[str]:
    """torchrun's options for the ``train`` section: ``train.nproc`` ranks here, alone (``--standalone``)
    or, with ``train.nnodes`` > 1, meeting the other machines through the c10d rendezvous at
    ``train.rdzv_endpoint`` under the name ``run_id`` (which every machine must give)."""
    here = f"--nproc-per-node={train.nproc}"
    if train.nnodes == 1:
        return ["--standalone", here]
    rendezvous = ["--rdzv-backend=c10d", f"--rdzv-endpoint={train.rdzv_endpoint}", f"--rdzv-id={run_id}"]
    return [f"--nnodes={train.nnodes}", here, *rendezvous]


def launch(train: Train, run_id: str, module: str, argv: Sequence[str]) -> int:
    """Run ``python -m module *argv`` as ``train.nproc`` ranks on this machine under torchrun, joined by
    the other machines' ranks as :func:`torchrun_options` says; wait for them.

    Returns 0 when every rank succeeded, else the exit code of the first one that failed (its own
    error is already on stderr; torchrun stops the others). The ranks inherit the working
    directory and the environment, with ``OMP_NUM_THREADS`` set, unless it is, to an equal share of
    the cores (torchrun would set 1 and warn), so the ranks' thread pools do not oversubscribe them.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpus() // train.nproc)))
    os.environ[PARENT_ENV] = str(os.getpid())  # torchrun runs in this process: it is the ranks' parent
    # Imported here: the launcher (torch.distributed.elastic) is only needed by the parent process.
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun([*torchrun_options(train, run_id), "-m", module, *argv])
    except ChildFailedError as err:
        return err.get_first_failure()[1].exitcode
    return 0


@contextmanager
def process_group(device_type: str) -> Iterator[None]:
    """Join the process group of torchrun's ranks for the block (backend per :func:`backend`), then
    leave it; in a plain process (not :func:`launched`) do nothing. A rank dies with its parent
    (:func:`pipeline.core.orphans.die_with_parent`). On CUDA, :func:`pin_device` has already given it
    its GPU."""
    if not launched():
        yield
        return
    # torchrun runs inside the stage's process: a SIGKILLed stage could not stop its ranks.
    die_with_parent(int(os.environ[PARENT_ENV]) if PARENT_ENV in os.environ else None)
    dist.init_process_group(backend(device_type))
    try:
        yield
    finally:
        dist.destroy_process_group()


def world_size() -> int:
    """Number of training processes: the process group's size, 1 without one."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in [0, :func:`world_size`); 0 without a process group. Rank 0 writes the files."""
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank among those on its machine: torchrun's ``LOCAL_RANK``, else 0."""
    return int(os.environ.get("LOCAL_RANK", 0))


def local_world_size() -> int:
    """Training processes on this machine: torchrun's ``LOCAL_WORLD_SIZE``, else :func:`world_size`."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def rank0_host() -> str:
    """The host of global rank 0, the one that writes the outputs: torchrun's ``MASTER_ADDR``."""
    return os.environ["MASTER_ADDR"]


def from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (sent pickled; rank 0 gets its own back), ``obj`` itself without a
    process group. On NCCL the bytes travel through the current GPU (:func:`pin_device`)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (sent pickled), on every rank; ``[obj]`` without a process group."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def convert_batchnorm(model: nn.Module, sync_batchnorm: bool) -> nn.Module:
    """``model`` with its BatchNorm layers made SyncBatchNorm when ``sync_batchnorm`` and there are
    several ranks (statistics over the global batch, not each rank's share), else ``model`` itself.

    Call before building the optimiser. The state dict keeps plain BatchNorm's keys, so the
    checkpoint loads into the plain model.
    """
    if sync_batchnorm and world_size() > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module) -> nn.Module:
    """``model`` under DistributedDataParallel when there are several ranks, else ``model`` itself.

    DDP broadcasts rank 0's parameters and buffers at construction and averages the gradients over
    the ranks in every backward pass, so every rank steps identical weights.
    """
    return DistributedDataParallel(model) if world_size() > 1 else model


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """For a backward pass under ``model``: DDP's ``no_sync()`` when not ``sync`` (the gradients
    accumulate on each rank, as in the first micro-batches of an accumulation group), else nothing,
    so the pass all-reduces as DDP does by default. A plain model always gets nothing."""
    if isinstance(model, DistributedDataParallel) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def sum_over_ranks(*tensors: torch.Tensor) -> None:
    """Replace each tensor (on the device of the backend) by its sum over the ranks, in place."""
    if world_size() > 1:
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def earliest_step(step: torch.Tensor) -> torch.Tensor:
    """The smallest non-zero value of the int64 scalar ``step`` over the ranks; 0 if it is 0 on all.

    For the first non-finite training step (0 = none): every rank then raises at the same epoch.
    """
    if world_size() == 1:
        return step
    never = torch.iinfo(torch.int64).max
    first = torch.where(step == 0, never, step)
    dist.all_reduce(first, op=dist.ReduceOp.MIN)
    return torch.where(first == never, 0, first)


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), in place.

    Each rank's BatchNorm updates its running statistics from its own shard of the batch, so
    without this the ranks would validate different models, none of them the one rank 0 saves.
    """
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
