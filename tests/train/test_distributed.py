"""Data-parallel training (pipeline.train.distributed): its decisions, the ranks' collectives, and the real
training stage under 2 CPU processes (gloo) against 1."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

import pipeline.train.setup as setup
import stages.train
from pipeline.core.errors import UserError
from pipeline.core.params import parse_params
from pipeline.core.runner import run_stage
from pipeline.data.build import build_cache
from pipeline.data.cache import save_cache
from pipeline.data.loader import SeededSampler, make_train_loader, shard_positions
from pipeline.data.split import make_split
from pipeline.data.synthetic import make_synthetic
from pipeline.models.checkpoint import load_checkpoint
from pipeline.models.registry import build_model
from pipeline.train import distributed
from pipeline.train.config import RunConfig, TrainConfig
from pipeline.train.fit import fit
from pipeline.train.resume import check_same_inputs
from tests.support import REPO, merge, shipped_params, write_params

# --- the decisions, in this one process ---


def test_backend_is_nccl_between_gpus_and_gloo_between_cpu_processes():
    assert distributed.backend("cuda") == "nccl"
    assert distributed.backend("cpu") == "gloo"
    assert distributed.backend("mps") == "gloo"


def test_a_process_counts_as_launched_only_when_torchrun_started_it():
    assert not distributed.launched({"PATH": "/bin"})
    assert distributed.launched({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "RANK": "1"})


def test_the_global_batch_is_divided_among_the_processes():
    assert distributed.per_rank_batch(16, 1) == 16
    assert distributed.per_rank_batch(16, 4) == 4
    with pytest.raises(UserError, match=r"^params.yaml: batch_size \(16\) must be a multiple of .* \(3\)$"):
        distributed.per_rank_batch(16, 3)


def test_sync_batchnorm_is_refused_only_for_several_processes_off_cuda():
    distributed.check_sync_batchnorm(True, 4, "cuda")
    distributed.check_sync_batchnorm(True, 1, "cpu")  # nothing to synchronise
    distributed.check_sync_batchnorm(False, 4, "cpu")
    with pytest.raises(UserError, match="train.sync_batchnorm needs CUDA GPUs"):
        distributed.check_sync_batchnorm(True, 2, "cpu")


def test_sync_batchnorm_really_fails_on_the_cpu_in_this_pytorch(tmp_path):
    """Why the option is CUDA-only: SyncBatchNorm raises in a CPU process group's first train step."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        layer = nn.SyncBatchNorm(3).train()
        with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
            layer(torch.randn(2, 3, 4, 4))
    finally:
        dist.destroy_process_group()


def test_without_a_process_group_it_is_one_plain_process():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert (distributed.world_size(), distributed.rank()) == (1, 0)
    assert distributed.wrap(model) is model
    assert distributed.convert_batchnorm(model, True) is model
    assert isinstance(model[1], nn.BatchNorm2d)
    total, step = torch.tensor(2.5), torch.tensor(3)
    distributed.sum_over_ranks(total)
    distributed.broadcast_buffers(model)
    assert total.item() == 2.5 and distributed.earliest_step(step) is step
    assert distributed.from_rank0(model) is model and distributed.gather(model) == [model]


def _train(**keys):
    return parse_params(merge(shipped_params(), {"train": keys})).train


def test_one_machine_runs_standalone_and_several_meet_at_the_endpoint():
    assert distributed.torchrun_options(_train(nproc=2, rdzv_endpoint="h:1"), "petseg-unet") == [
        "--standalone",
        "--nproc-per-node=2",
    ]
    several = _train(nproc=2, nnodes=3, rdzv_endpoint="10.0.0.7:29400")
    assert distributed.torchrun_options(several, "petseg-unet") == [
        *("--nnodes=3", "--nproc-per-node=2", "--rdzv-backend=c10d"),
        *("--rdzv-endpoint=10.0.0.7:29400", "--rdzv-id=petseg-unet"),
    ]


class FakeCuda:
    """torch.cuda's calls that :func:`distributed.pin_device` and the device choice make, recorded in order,
    on a machine of ``count`` GPUs; its first CUDA call (a tensor on "cuda") ends the stage."""

    def __init__(self, monkeypatch, count=2):
        self.calls = []
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda index: self.calls.append(("set_device", index)))
        monkeypatch.setattr(torch, "zeros", self.zeros)

    def zeros(self, *size, device=None, **kwargs):
        self.calls.append(("first call", str(device)))
        raise KeyboardInterrupt  # not an error the stage handles: the test ends it here


def test_a_launched_rank_takes_its_gpu_before_the_first_cuda_call(tmp_path, monkeypatch):
    cuda = FakeCuda(monkeypatch)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    params = write_params(tmp_path / "params.yaml", train={"nproc": 2}, device="cuda")
    argv = ["--params", str(params), "--model", "unet", "--train", "t", "--valid", "v"]
    argv += ["--checkpoint", "m.pt", "--live", "live", "--resume", "r.pt"]
    with pytest.raises(KeyboardInterrupt):
        stages.train.main(argv)
    assert cuda.calls == [("set_device", 1), ("first call", "cuda")]


def test_only_a_launched_rank_that_may_use_cuda_pins_a_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    rank = {"WORLD_SIZE": "4", "LOCAL_RANK": "3"}
    distributed.pin_device("cpu", rank)  # a CPU training touches no GPU
    distributed.pin_device("auto", {"PATH": "/bin"})  # a plain process keeps torch's default
    distributed.pin_device("auto", rank)
    assert cuda.calls == [("set_device", 3)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    distributed.pin_device("auto", rank)  # no GPU: nothing to pin
    assert cuda.calls == [("set_device", 3)]


def test_more_processes_than_gpus_on_a_machine_is_a_user_error(monkeypatch):
    FakeCuda(monkeypatch, count=2)
    distributed.check_gpus(2, "cuda")
    distributed.check_gpus(8, "cpu")
    with pytest.raises(UserError, match=r"^params.yaml: train.nproc is 3 but this machine has 2 GPUs; lower it$"):
        distributed.check_gpus(3, "cuda")


def test_the_processes_of_a_machine_share_its_loader_workers(monkeypatch):
    assert distributed.local_world_size() == 1 and distributed.local_rank() == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert distributed.local_world_size() == 4 and distributed.local_rank() == 2


def test_ranks_with_other_data_or_settings_are_refused_in_one_line():
    inputs = {"model": "unet", "lr": 0.001, "cache:train": "ab" * 32}
    check_same_inputs("unet", [inputs, dict(inputs)])
    other = {**inputs, "cache:train": "cd" * 32}
    with pytest.raises(UserError, match=r"^train unet: rank 2 has other training inputs than rank 0 \(cache:train: "):
        check_same_inputs("unet", [inputs, inputs, other])


# --- each rank's share of the training data ---


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(10, 4, 2), (12, 4, 2), (12, 4, 4), (17, 8, 2), (5, 8, 2), (3, 4, 1)]
)
def test_the_ranks_share_every_global_batch_and_each_sample_once(n, batch, world):
    shares = [shard_positions(n, batch, rank, world) for rank in range(world)]
    single = shard_positions(n, batch)
    # As one process: N // batch full batches (the tail dropped), or one batch of all N if N <= batch.
    assert single == list(range(n // batch * batch if n > batch else n))
    taken = sorted(p for share in shares for p in share)
    assert len(taken) == len(set(taken))  # no sample twice in an epoch
    assert len({len(share) for share in shares}) == 1  # the same number of batches on every rank
    if n > batch:
        assert taken == single
        per_rank = batch // world
        for b in range(n // batch):  # global batch b is the same samples as for one process
            together = [p for share in shares for p in share[b * per_rank : (b + 1) * per_rank]]
            assert sorted(together) == single[b * batch : (b + 1) * batch]
    else:  # one global batch, cut to a multiple of the rank count
        assert taken == list(range(n // world * world))


def test_fewer_images_than_processes_is_a_user_error():
    with pytest.raises(
        UserError, match=r"has 3 images, fewer than the training processes, train.nnodes x train.nproc \(4\)"
    ):
        shard_positions(3, 8, 0, 4)


def test_the_ranks_draw_the_order_and_seeds_of_one_process():
    single = list(SeededSampler(20, seed=5, batch_size=8))
    ranks = [list(SeededSampler(20, seed=5, batch_size=8, rank=r, world=2)) for r in range(2)]
    # Global batch b = rank 0's 4 pairs of it, then rank 1's: the same (index, seed) pairs.
    rebuilt = [pair for b in range(2) for share in ranks for pair in share[4 * b : 4 * b + 4]]
    assert rebuilt == single and len(single) == 16


def test_the_loader_of_a_rank_gives_its_share_of_each_global_batch():
    data = torch.arange(20).float()
    loader = make_train_loader(data, 8, seed=0, num_workers=0, device_type="cpu", rank=1, world=2)
    assert [len(batch) for batch in loader] == [4, 4]


# --- 2 ranks in CPU processes (gloo) ---


class NoNorm(nn.Module):
    """A conv net without BatchNorm: its gradient does not depend on how a batch is split."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, x):
        return self.net(x)


EXACT = TrainConfig(
    epochs=2, batch_size=4, lr=3e-3, weight_decay=0.0, scheduler="cosine", loss="ce", seed=0, augment="full"
)


def _no_norm(name, out_channels, **arch):
    return NoNorm()


def _fit_without_batchnorm(data, checkpoint):
    """fit() of :class:`NoNorm` (with ``setup.build_model`` replaced by :func:`_no_norm`): the logged
    records without their timings."""
    logged = []
    fit(RunConfig("unet", {}, EXACT, checkpoint, progress=False), *data, lambda e, r: logged.append(r))
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in logged]


def _rank(rank, store, out, data):
    """One of 2 ranks: the collectives on known values, then fit() on ``data``; results to out/rank{rank}.pt."""
    # A timeout, so that a collective one rank never joins fails the test instead of hanging it.
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timedelta(minutes=2)
    )
    try:
        total = torch.tensor(rank + 1.0)
        distributed.sum_over_ranks(total)
        steps = [distributed.earliest_step(torch.tensor(pair[rank])).item() for pair in ([0, 3], [5, 2], [0, 0])]
        norm = nn.BatchNorm1d(1)
        norm.running_mean.fill_(rank + 7.0)
        distributed.broadcast_buffers(norm)
        synced = distributed.convert_batchnorm(build_model("unet", base_channels=4, bilinear=False), True)
        kinds = {type(m).__name__ for m in synced.modules()} & {"BatchNorm2d", "SyncBatchNorm"}
        build_model("unet", base_channels=4, bilinear=False).load_state_dict(synced.state_dict())  # plain keys
        setup.build_model = _no_norm  # this process's own module
        logged = _fit_without_batchnorm(data, out / "run" / "m.pt")
        results = {"sum": total.item(), "steps": steps, "mean": norm.running_mean.item(), "norms": sorted(kinds)}
        results |= {"sent": distributed.from_rank0(f"rank {rank}'s"), "gathered": distributed.gather(rank + 10)}
        torch.save({**results, "logged": logged}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_train_as_one_process_at_the_same_global_batch(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setattr(setup, "build_model", _no_norm)
    single = _fit_without_batchnorm(tiny_data, tmp_path / "single" / "m.pt")
    mp.spawn(_rank, args=(str(tmp_path / "store"), tmp_path, tiny_data), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["sum"] for r in ranks] == [3.0, 3.0]
    assert [r["steps"] for r in ranks] == [[3, 2, 0], [3, 2, 0]]  # the earliest non-zero step, 0 = none
    assert [r["mean"] for r in ranks] == [7.0, 7.0]  # rank 0's buffers
    assert [r["norms"] for r in ranks] == [["SyncBatchNorm"], ["SyncBatchNorm"]]
    assert [r["sent"] for r in ranks] == ["rank 0's", "rank 0's"]
    assert [r["gathered"] for r in ranks] == [[10, 11], [10, 11]]
    # Rank 0 logs the values of one process (to float rounding: the ranks sum in another order).
    assert ranks[1]["logged"] == []  # log() is called on rank 0 only
    for got, want in zip(ranks[0]["logged"], single, strict=True):
        assert got.keys() == want.keys()
        assert all(got[k] == pytest.approx(want[k], abs=1e-5) for k in want), (got, want)
    a = torch.load(tmp_path / "single" / "m.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "m.pt", weights_only=True)
    assert a["epoch"] == b["epoch"]
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["m.pt"]  # rank 1 wrote nothing


# --- the training stage, started with train.nproc 2 as DVC starts it ---

EPOCHS = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Caches of 128 synthetic pets at 32 px (48 train, 16 valid) and params for 3 quick UNet epochs
    at a global batch of 16, for 1 and for 2 processes (params1.yaml, params2.yaml)."""
    root = tmp_path_factory.mktemp("distributed")
    make_synthetic(root / "raw", 128, seed=3)
    split = make_split(root / "raw", 0.25, seed=0)
    for name in ("train", "valid"):
        save_cache(root / name, build_cache(root / "raw", getattr(split, name), 32, "pet", progress=False))
    params = shipped_params()
    params.update(epochs=EPOCHS, batch_size=16, augment="none", num_workers=0)
    params["unet"] = {"base_channels": 4, "bilinear": False}
    for nproc in (1, 2):
        params["train"] = {"nproc": nproc, "sync_batchnorm": False, "resume_every_s": 0}
        (root / f"params{nproc}.yaml").write_text(yaml.safe_dump(params))
    return root


def _args(root, which, run):
    """The stage's arguments for params ``root``/params{which}.yaml and the outputs in ``root``/``run``."""
    return [
        *("--params", str(root / f"params{which}.yaml"), "--model", "unet"),
        *("--train", str(root / "train"), "--valid", str(root / "valid")),
        *("--checkpoint", str(root / run / "unet.pt"), "--live", str(root / run / "live")),
        *("--resume", str(root / run / ".resume" / "unet.pt")),
    ]


def _stage(root, which, run, **kwargs):
    """The stage as DVC runs it (arguments as :func:`_args`), in its own session (so that a kill reaches the
    ranks too)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "stages.train", *_args(root, which, run)]
    return subprocess.Popen(command, cwd=root, env=env, text=True, start_new_session=True, **kwargs)


def _kill_after_first_epoch(root, run):
    """Start 2 processes; once rank 0 has saved epoch 1's resume state, SIGKILL the stage alone (as the
    OOM killer would, or `kill -9` of DVC's child): its ranks must die with it."""
    psutil = pytest.importorskip("psutil")
    proc = _stage(root, 2, run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state, deadline = root / run / ".resume" / "unet.pt", time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ranks = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    with contextlib.suppress(ProcessLookupError):  # it may have ended already (asserted below)
        proc.kill()
    proc.wait()
    assert state.exists(), f"training ended before epoch 1 was saved: {proc.stderr.read()[-3000:]}"
    assert len(ranks) >= 2
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert alive == [], f"ranks still running after the stage was killed: {alive}"


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _history(run_dir):
    metrics = run_dir / "live" / "plots" / "metrics"
    return {name: pd.read_csv(metrics / f"{name}.tsv", sep="\t") for name in ("train/loss", "valid/loss", "valid/dice")}


@pytest.fixture(scope="module")
def two_processes(workdir):
    """The stage with train.nproc 2, killed after its first epoch and run again to the end: its stdout, and
    the files that appeared in ``workdir`` meanwhile. (A resumed run ends as an uninterrupted one,
    tests/train/test_resume.py.)"""
    before = set(_files(workdir))
    _kill_after_first_epoch(workdir, "two")
    proc = _stage(workdir, 2, "two", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out, set(_files(workdir)) - before


@pytest.mark.e2e
def test_two_processes_resume_give_the_valid_dice_of_one_and_write_each_output_once(workdir, two_processes, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks (torchrun sets OMP_NUM_THREADS=1): the same float sums
    try:
        assert run_stage(stages.train.main, _args(workdir, 1, "one")) == 0
    finally:
        torch.set_num_threads(threads)
    assert "train unet: 48 train / 16 valid images; device: cpu (" in capsys.readouterr().out
    out, new_files = two_processes
    assert out.startswith("train unet: 2 processes on cpu\n")
    # Every rank resumed after the epoch rank 0 saved (else they would disagree on the epochs to run);
    # rank 0 alone printed, each epoch once.
    trained = [line.split(":")[0] for line in out.splitlines() if "train loss" in line]
    resumed = int(out.split("resuming after epoch ")[1].split()[0])
    assert trained == [f"unet epoch {e}" for e in range(resumed + 1, EPOCHS + 1)] and resumed < EPOCHS
    assert out.count("resuming after epoch") == 1 and out.count("best valid Dice") == 1
    # The files of one process, and nothing anywhere else: rank 1 wrote nothing, the state is gone.
    assert _files(workdir / "two") == _files(workdir / "one")
    assert new_files == {f"two/{name}" for name in _files(workdir / "two")}
    assert not (workdir / "two" / ".resume" / "unet.pt").exists()
    dice = {}
    for run in ("one", "two"):
        history = _history(workdir / run)
        for name, table in history.items():
            assert table["step"].tolist() == list(range(EPOCHS)), (run, name)  # each epoch logged once
        dice[run] = history["valid/dice"]["dice"]
        _, ckpt = load_checkpoint(workdir / run / "unet.pt", torch.device("cpu"))  # a plain UNet's keys
        assert ckpt["valid_dice"] == pytest.approx(dice[run].max(), abs=1e-6)
    print(
        f"valid Dice by epoch: 1 process {dice['one'].round(4).tolist()}, 2 processes {dice['two'].round(4).tolist()}"
    )
    # Close, not equal: without SyncBatchNorm each rank normalises by the statistics of its 8 images.
    # (Without BatchNorm the ranks train exactly as one process: see the test above.)
    assert (dice["two"] - dice["one"]).abs().max() < 0.01


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
def test_two_machines_of_one_process_train_the_weights_of_one_machine_of_two(workdir, two_processes):
    """Two "machines" on 127.0.0.1: two stages with train.nnodes 2 and train.nproc 1, meeting at one
    endpoint, against one with train.nproc 2, at the same global batch. BatchNorm normalises over each
    rank's share of the batch in both (no SyncBatchNorm on a CPU), so the comparison is fair: rank r
    trains on the same images either way."""
    params = yaml.safe_load((workdir / "params2.yaml").read_text())
    params["train"] = {"nproc": 1, "nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{_free_port()}", "sync_batchnorm": False}
    (workdir / "params-machines.yaml").write_text(yaml.safe_dump(params))
    machines = [_stage(workdir, "-machines", f"m{m}", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for m in (0, 1)]
    said = [machine.communicate(timeout=600) for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], [err[-3000:] for _, err in said]
    assert [out.splitlines()[0] for out, _ in said] == ["train unet: 1 process on cpu, 2 on 2 machines"] * 2
    # The machine of global rank 0 (torchrun's c10d rendezvous orders them by host name, then pid) wrote
    # every output; the other wrote nothing and said where they are.
    writer = [m for m in (0, 1) if (workdir / f"m{m}").exists()]
    assert len(writer) == 1 and _files(workdir / f"m{writer[0]}") == _files(workdir / "two")
    assert "which writes the outputs" in said[1 - writer[0]][0]
    a = torch.load(workdir / "two" / "unet.pt", weights_only=True)
    b = torch.load(workdir / f"m{writer[0]}" / "unet.pt", weights_only=True)
    assert a["epoch"] == b["epoch"]
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=1e-5)


def test_bad_multi_process_settings_fail_in_one_line_before_any_process_starts(workdir, tmp_path, capsys):
    params = yaml.safe_load((workdir / "params2.yaml").read_text())
    for change, message in (
        (
            {"batch_size": 15},
            "batch_size (15) must be a multiple of the training processes, train.nnodes x train.nproc (2)",
        ),
        ({"train": {"nproc": 2, "sync_batchnorm": True}}, "train.sync_batchnorm needs CUDA GPUs"),
    ):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, **change}))
        argv = _args(workdir, 2, tmp_path / "run")
        argv[1] = str(tmp_path / "params.yaml")
        assert run_stage(stages.train.main, argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_torchrun_with_another_process_count_than_train_nproc_is_refused(workdir, tmp_path, monkeypatch, capsys):
    # One rank under a launcher (the variables torchrun sets) while params.yaml asks for 2.
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", "0")
    argv = _args(workdir, 2, tmp_path / "run")
    assert run_stage(stages.train.main, argv) == 1
    assert "train.nnodes x train.nproc is 2 but torchrun started 1 processes" in capsys.readouterr().err
    assert not dist.is_initialized() and not (tmp_path / "run").exists()


def test_a_failed_training_process_fails_the_stage_in_one_line(tmp_path, monkeypatch, capsys):
    params = write_params(tmp_path / "params.yaml", train={"nproc": 2}, batch_size=4)
    launched = []
    monkeypatch.setattr(
        distributed, "launch", lambda train, run_id, module, argv: launched.append((train.nproc, module)) or 3
    )
    args = ["--params", str(params), "--model", "unet", "--train", "t", "--valid", "v"]
    args += ["--checkpoint", str(tmp_path / "m.pt"), "--live", str(tmp_path / "live"), "--resume", str(tmp_path / "r")]
    assert run_stage(stages.train.main, args) == 1
    assert launched == [(2, "stages.train")]
    assert capsys.readouterr().err == "error: train unet: a training process failed with exit code 3 (see above)\n"
    assert list(tmp_path.iterdir()) == [params]  # nothing written
