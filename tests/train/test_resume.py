"""Resume after a kill: the state file, and a real training subprocess killed with SIGKILL, or stopped
by Ctrl-C (SIGINT) or SIGTERM, which end it in one line."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import pipeline.train.resume as resume
from pipeline.core.device import choose_precision, precision_name, probe
from pipeline.core.param_training import Train
from pipeline.data.build import build_cache
from pipeline.data.cache import save_cache
from pipeline.data.split import make_split
from pipeline.data.synthetic import make_synthetic
from pipeline.train.resume import (
    ResumeStore,
    differences,
    file_digest,
    load_state,
    restore_dir,
    rng_state,
    save_state,
    set_rng_state,
    snapshot_dir,
    training_inputs,
)
from tests.support import REPO, FakeClock, shipped_params


def test_rng_state_round_trip_replays_every_generator():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_a_state_loads_only_with_the_inputs_it_was_made_with(tmp_path):
    path, inputs = tmp_path / "s.pt", {"lr": 0.001, "epochs": 4, "train_cache": "ab" * 32}
    assert load_state(path, inputs) == (None, "")  # nothing saved yet: fresh, silently
    save_state(path, {"epoch": 2, "w": torch.arange(3)}, inputs)
    state, reason = load_state(path, dict(inputs))
    assert reason == "" and state["epoch"] == 2 and torch.equal(state["w"], torch.arange(3))
    state, reason = load_state(path, {**inputs, "lr": 0.0003})
    assert state is None and reason.endswith("other settings (lr: 0.001 → 0.0003); starting fresh")
    path.write_bytes(b"not a torch file")
    state, reason = load_state(path, inputs)
    assert state is None and "unreadable resume state" in reason


def test_a_state_of_another_format_version_is_ignored(tmp_path, monkeypatch):
    import pipeline.train.resume as resume

    save_state(tmp_path / "s.pt", {"epoch": 1}, {})
    monkeypatch.setattr(resume, "STATE_VERSION", resume.STATE_VERSION + 1)
    state, reason = load_state(tmp_path / "s.pt", {})
    assert state is None and "has format 1" in reason


def test_differences_shortens_long_digests():
    shown = differences({"a": "0" * 64, "b": 1}, {"a": "1" * 64, "b": 1})
    assert shown == 'a: "' + "0" * 12 + '… → "' + "1" * 12 + "…"


def test_snapshot_and_restore_recreate_a_folder_exactly(tmp_path):
    live = tmp_path / "live"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "metrics.json").write_text('{"step": 1}')
    (live / "plots" / "metrics" / "lr.tsv").write_text("step\tlr\n0\t0.1\n1\t0.05\n")
    files = snapshot_dir(live)
    (live / "plots" / "metrics" / "lr.tsv").write_text("step\tlr\n0\t0.1\n1\t0.05\n2\t0.01\n")
    (live / "stray.txt").write_text("x")
    restore_dir(live, files)
    assert snapshot_dir(live) == files
    assert snapshot_dir(tmp_path / "absent") == {}


def test_store_restores_the_live_folder_and_says_where_it_resumes(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    (live / "metrics.json").write_text('{"step": 0}')
    store = ResumeStore(tmp_path / ".resume" / "m.pt", {"lr": 1}, live, every_s=0, epochs=4)
    store.save({"epoch": 1, "stopped": False})
    (live / "metrics.json").unlink()
    said = []
    assert store.load(said.append)["epoch"] == 1
    assert said == [f"{tmp_path / '.resume' / 'm.pt'}: resuming after epoch 1"]
    assert (live / "metrics.json").read_text() == '{"step": 0}'
    store.clear()
    assert store.load(said.append) is None and len(said) == 1


def _written(monkeypatch):
    """The epochs of the states written to disk, in order, as resume.save_state is called."""
    written = []
    real = resume.save_state
    monkeypatch.setattr(
        resume, "save_state", lambda path, state, inputs: (written.append(state["epoch"]), real(path, state, inputs))
    )
    return written


def test_the_state_is_written_by_time_not_by_epoch_and_always_after_the_last(tmp_path, monkeypatch):
    written, clock = _written(monkeypatch), FakeClock()
    store = ResumeStore(tmp_path / "s.pt", {}, tmp_path / "live", every_s=250, epochs=10, clock=clock)
    for epoch in range(1, 11):  # epochs of 100 s
        clock.now += 100
        store.save({"epoch": epoch, "stopped": False})
    assert written == [3, 6, 9, 10]
    written.clear()
    store = ResumeStore(tmp_path / "s.pt", {}, tmp_path / "live", every_s=250, epochs=10, clock=clock)
    store.save({"epoch": 1, "stopped": False})
    store.save({"epoch": 2, "stopped": True})  # an early stop is the last epoch too
    assert written == [2]
    every = ResumeStore(tmp_path / "s.pt", {}, tmp_path / "live", every_s=0, epochs=10, clock=clock)
    for epoch in (1, 2):
        every.save({"epoch": epoch, "stopped": False})  # no time passes: 0 writes every epoch all the same
    assert written == [2, 1, 2]


def test_an_interruption_writes_the_last_completed_epoch_as_it_was(tmp_path, monkeypatch):
    written, clock = _written(monkeypatch), FakeClock()
    store = ResumeStore(tmp_path / "s.pt", {}, tmp_path / "live", every_s=3600, epochs=10, clock=clock)
    weights, resumes_after = torch.zeros(3), []
    with pytest.raises(KeyboardInterrupt), store.writing_when_interrupted(resumes_after.append):
        raise KeyboardInterrupt  # in the first epoch: nothing to write, nothing to resume after
    with pytest.raises(KeyboardInterrupt), store.writing_when_interrupted(resumes_after.append):
        store.save({"epoch": 1, "stopped": False, "model": {"w": weights}})
        store.save({"epoch": 2, "stopped": False, "model": {"w": weights}})
        weights += 1  # epoch 3 trains in place, then Ctrl-C
        raise KeyboardInterrupt
    assert written == [2] and resumes_after == [2]
    state, _ = load_state(tmp_path / "s.pt", {})
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.zeros(3))
    with pytest.raises(KeyboardInterrupt), store.writing_when_interrupted(resumes_after.append):
        raise KeyboardInterrupt  # nothing completed since the last write: nothing more to write
    assert written == [2] and resumes_after == [2, 2]


def test_how_often_the_state_is_written_is_not_in_its_fingerprint():
    # Changing resume_every_s between a kill and the rerun must resume the state, not discard it.
    base = Train().fingerprint_inputs()
    assert Train(resume_every_s=5).fingerprint_inputs() == base and "resume_every_s" not in base
    assert Train(crops_per_image=2).fingerprint_inputs() != base  # what changes the weights stays in


# --- a real training subprocess, killed with SIGKILL after its 2nd epoch ---

EPOCHS = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Caches of 48 synthetic pets at 96 px (epochs of about a second) and params files for 4 quick UNet epochs:
    params.yaml writes the resume state after every epoch, rare.yaml only after the last one (and when stopped)."""
    root = tmp_path_factory.mktemp("resume")
    make_synthetic(root / "raw", 48, seed=3)
    split = make_split(root / "raw", 0.25, seed=0)
    for name in ("train", "valid"):
        save_cache(root / f"{name}.npz", build_cache(root / "raw", getattr(split, name), 96, "pet", progress=False))
    params = shipped_params()
    params.update(epochs=EPOCHS, batch_size=4, augment="full", num_workers=0)
    params["unet"] = {"base_channels": 8, "bilinear": False}
    params["train"]["resume_every_s"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    params["train"]["resume_every_s"] = 3600
    (root / "rare.yaml").write_text(yaml.safe_dump(params))
    return root


def _command(root, run, params="params.yaml"):
    return [
        *(sys.executable, "-m", "stages.train", "--params", str(root / params), "--model", "unet"),
        *("--train", str(root / "train.npz"), "--valid", str(root / "valid.npz")),
        *("--checkpoint", str(root / run / "unet.pt"), "--live", str(root / run / "live")),
        *("--resume", str(root / run / ".resume" / "unet.pt")),
    ]


def _env():
    # One intra-op thread: the same float reductions in every run, whatever else shares the CPU.
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run(root, run):
    done = subprocess.run(_command(root, run), cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _state_epoch(run_dir) -> int:
    """The last epoch the resume state on disk holds (0: none yet). The file is replaced atomically."""
    try:
        state = torch.load(run_dir / ".resume" / "unet.pt", map_location="cpu", weights_only=True)
        return int(resume._decode(state)["state"]["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError, KeyError):
        return 0


def _handed_over_epoch(run_dir) -> int:
    """The last epoch whose state the stage surely holds, written or not (0: none yet): the one before the
    last epoch dvclive has logged, since an epoch is logged just before its state is handed over. (dvclive's
    summary counts its step from 0.)"""
    try:
        return json.loads((run_dir / "live" / "metrics.json").read_text())["step"]
    except (FileNotFoundError, ValueError, KeyError):  # not there yet, or caught mid-write
        return 0


def _run_and_kill_after_epoch(root, run, epoch, sig=signal.SIGKILL, params="params.yaml", progress=_state_epoch):
    """Start training with ``params``; send it ``sig`` once ``progress`` (of the run's folder) is ``epoch`` or
    later. Returns its exit status, what it wrote on stderr, and the epoch its state holds after the kill (the
    poll can lag on a loaded machine, so that may be a later epoch, but never the last)."""
    for _ in range(3):  # a poll starved of CPU may see the state only after the last epoch: run again
        shutil.rmtree(root / run, ignore_errors=True)
        code, stderr, done = _kill_once(root, run, epoch, sig, params, progress)
        if epoch <= done < EPOCHS:
            return code, stderr, done
    raise AssertionError(f"killed after epoch {done}, wanted {epoch}..{EPOCHS - 1}: {stderr[-2000:]}")


def _as_from_a_shell() -> None:
    # pytest-xdist's workers ignore SIGINT (Ctrl-C is the controller's), and an ignored signal stays
    # ignored across exec: the training would never see the SIGINT this test sends. A shell's child has
    # the default handler. The lower priority keeps this test's poll ahead of the training on a loaded
    # machine, where a starved poll saw the state only after the last epoch.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.nice(10)


def _kill_once(root, run, epoch, sig, params, progress):
    proc = subprocess.Popen(
        _command(root, run, params),
        cwd=root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_shell,
    )
    # The epoch is read from the files themselves: counting file versions misses some when this loop is
    # starved of CPU.
    deadline = time.monotonic() + 300
    while progress(root / run) < epoch and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # With rare.yaml, only the last epoch writes a state: one there before the signal fails the test below.
    unsignalled = _state_epoch(root / run)
    proc.send_signal(sig)
    # Read stderr while waiting: a child writing more than a pipe holds would block, and wait() with it.
    stderr = proc.communicate(timeout=300)[1].decode()
    done = _state_epoch(root / run)
    assert params == "params.yaml" or unsignalled in (0, EPOCHS), f"state of epoch {unsignalled} before the signal"
    return proc.returncode, stderr, done


def _history(run_dir):
    metrics = run_dir / "live" / "plots" / "metrics"
    return {
        name: pd.read_csv(metrics / f"{name}.tsv", sep="\t")
        for name in ("train/loss", "valid/loss", "valid/dice", "lr")
    }


@pytest.fixture(scope="module")
def uninterrupted(workdir):
    _run(workdir, "whole")
    return workdir / "whole"


# SIGTERM runs with rare.yaml, where only the signal can have written the state of an epoch before the last, and
# reruns with params.yaml: another resume_every_s keeps the state.
KILLS = {
    "SIGKILL": (signal.SIGKILL, -signal.SIGKILL, "params.yaml", _state_epoch),
    "SIGINT": (signal.SIGINT, 130, "params.yaml", _state_epoch),
    "SIGTERM-rare-writes": (signal.SIGTERM, 143, "rare.yaml", _handed_over_epoch),
}


@pytest.mark.e2e
@pytest.mark.parametrize("kill", KILLS)
def test_a_run_killed_after_epoch_2_resumes_at_epoch_3_and_ends_as_an_uninterrupted_one(workdir, uninterrupted, kill):
    sig, status, params, progress = KILLS[kill]
    run = f"killed-{kill}"
    code, stderr, done = _run_and_kill_after_epoch(workdir, run, 2, sig, params, progress)
    assert code == status
    if sig != signal.SIGKILL:  # Ctrl-C and SIGTERM: one line saying what stopped and that a rerun resumes
        line = f"interrupted: train unet after epoch {done} of 4; `dvc repro` resumes after epoch {done}"
        assert stderr.splitlines() == [line]
    out = _run(workdir, run)
    assert f"resuming after epoch {done}" in out
    trained = [e for e in range(1, EPOCHS + 1) if f"unet epoch {e}: train loss" in out]
    assert trained == list(range(done + 1, EPOCHS + 1))
    history, reference = _history(workdir / run), _history(uninterrupted)
    for name, table in history.items():
        assert table["step"].tolist() == list(range(EPOCHS)), name  # epochs 1-4, once each
        pd.testing.assert_frame_equal(table, reference[name])
    a = torch.load(workdir / run / "unet.pt", weights_only=True)
    b = torch.load(uninterrupted / "unet.pt", weights_only=True)
    assert (a["epoch"], a["valid_dice"]) == (b["epoch"], b["valid_dice"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    assert not (workdir / run / ".resume" / "unet.pt").exists()  # a finished run leaves no state


def _other_precision() -> tuple[str, str]:
    """What ``precision: auto`` resolves to on this CPU, and the other of bf16 / fp32."""
    auto = precision_name(choose_precision("auto", probe(torch.device("cpu"))).value)
    return auto, "fp32" if auto == "bf16" else "bf16"


@pytest.mark.e2e
@pytest.mark.parametrize("change", ["lr", "precision"])
def test_changing_a_setting_between_kill_and_rerun_starts_fresh_and_says_why(workdir, uninterrupted, change):
    run = f"changed-{change}"
    _run_and_kill_after_epoch(workdir, run, 1)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    if change == "lr":
        edit, expected = {"lr": params["lr"] / 2}, "(lr: 0.001 → 0.0005)"
    else:  # the precision that ran is fingerprinted, not the param: `auto` differs between machines
        auto, other = _other_precision()
        edit, expected = {"precision": other}, f'(precision: "{auto}" → "{other}")'
    changed = workdir / f"{run}.yaml"
    changed.write_text(yaml.safe_dump({**params, **edit}))
    command = _command(workdir, run)
    command[command.index("--params") + 1] = str(changed)
    done = subprocess.run(command, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    reasons = [line for line in done.stdout.splitlines() if "starting fresh" in line]
    assert len(reasons) == 1 and expected in reasons[0]
    assert "resuming" not in done.stdout
    assert _history(workdir / run)["lr"]["step"].tolist() == list(range(EPOCHS))


def test_an_empty_state_file_is_ignored_with_a_reason(tmp_path):
    (tmp_path / "s.pt").write_bytes(b"")
    state, reason = load_state(tmp_path / "s.pt", {})
    assert state is None and reason.startswith(f"{tmp_path / 's.pt'}: unreadable resume state (")


def test_training_inputs_change_with_the_caches_and_the_encoder_file(tmp_path):
    train, valid, encoder = tmp_path / "train.npz", tmp_path / "valid.npz", tmp_path / "enc.pth"
    for path in (train, valid, encoder):
        path.write_bytes(b"a")
    base = training_inputs("resnet34_unet", {}, {"lr": 1}, [train, valid], str(encoder))
    assert training_inputs("resnet34_unet", {}, {"lr": 1}, [train, valid], str(encoder)) == base
    encoder.write_bytes(b"b")
    changed = training_inputs("resnet34_unet", {}, {"lr": 1}, [train, valid], str(encoder))
    shown = differences(base, changed)
    assert shown.startswith("encoder_weights_file: ") and "cache" not in shown
    valid.write_bytes(b"b")
    assert "cache:valid.npz" in differences(
        changed, training_inputs("resnet34_unet", {}, {"lr": 1}, [train, valid], str(encoder))
    )
    assert "encoder_weights_file" not in training_inputs("unet", {}, {}, [train], "none")


def test_a_cache_folder_digest_changes_with_any_of_its_files(tmp_path):
    folder = tmp_path / "train"
    (folder / "sub").mkdir(parents=True)
    (folder / "images.npy").write_bytes(b"ab")
    (folder / "sub" / "meta.json").write_bytes(b"c")
    digest = file_digest(folder)
    assert file_digest(folder) == digest and len(digest) == 64
    (folder / "images.npy").write_bytes(b"a")
    (folder / "sub" / "meta.json").write_bytes(b"bc")  # the same bytes in all, moved to the next file
    assert file_digest(folder) != digest
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "absent")
