"""Stages `train@unet`, `train@resnet34_unet`: fit one model, keep the best-valid-Dice weights.

Resumable: a run killed at any moment continues after its last completed epoch when the stage
runs again with the same settings (see pipeline/train/resume.py for where the state lives and why).

With ``train.nproc`` > 1 the stage starts itself again as that many ranks under torchrun and waits
for them (pipeline/train/distributed.py), so `dvc repro` and `dvc exp run` stay the entry points. Rank 0
alone writes the checkpoint, the dvclive folder and the resume state, and prints; every rank reads
the resume state back, so a killed multi-process run resumes like a single one.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dvclive import Live

from pipeline.core.constants import SCORE_LABELS
from pipeline.core.device import Compute, choose_compile, choose_device, decide
from pipeline.core.errors import UserError
from pipeline.core.messages import plural
from pipeline.core.params import Params, load_params
from pipeline.core.runner import report_progress, run_stage
from pipeline.data.balance import class_weights
from pipeline.data.cache import CachedSplit, load_cache
from pipeline.models.registry import check_options
from pipeline.train import distributed
from pipeline.train.config import RunConfig, TrainConfig, train_config
from pipeline.train.fit import FitResult, fit
from pipeline.train.resume import ResumeStore, load_state, training_inputs
from pipeline.train.setup import Arrays

# The stage's options, every one required (dvc.yaml passes them all): name → help.
OPTIONS = {
    "params": "params.yaml",
    "model": "registry name: unet or resnet34_unet",
    "train": "train split cache folder",
    "valid": "valid split cache folder",
    "checkpoint": "output .pt file",
    "live": "dvclive output folder",
    "resume": "resume state file (untracked; deleted when training ends)",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read the shared training keys and the model's section, train, log with dvclive."""
    parser = argparse.ArgumentParser(description=__doc__)
    for name, text in OPTIONS.items():
        parser.add_argument(f"--{name}", required=True, help=text)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg, arch = train_config(params, args.model)
    check_options(args.model, arch)  # before dvclive creates its folder
    nproc, device = params.train.nproc, choose_device(params.device).value
    # Checked before any rank starts, so that a bad setting fails in one line, once.
    distributed.per_rank_batch(cfg.batch_size, nproc)
    distributed.check_sync_batchnorm(params.train.sync_batchnorm, nproc, device.type)
    if nproc > 1 and not distributed.launched():
        print(f"train {args.model}: {nproc} processes on {device}")
        code = distributed.launch(nproc, "stages.train", sys.argv[1:] if argv is None else argv)
        if code:
            raise UserError(f"train {args.model}: a training process failed with exit code {code} (see above)")
        return
    with distributed.process_group(device.type):
        run(args, params, cfg, arch)


def run(args: argparse.Namespace, params: Params, cfg: TrainConfig, arch: dict[str, Any]) -> None:
    """Train in this process: the only one, or one rank of the process group."""
    if distributed.world_size() != params.train.nproc:
        raise UserError(
            f"params.yaml: train.nproc is {params.train.nproc} but torchrun started {distributed.world_size()} "
            "processes; run `python -m stages.train` without torchrun, it starts them itself"
        )
    compute, said = decide(params.device, params.precision, params.threads)
    said.append(choose_compile(cfg.compile, compute.device.type).why)
    train, valid = load_cache(args.train), load_cache(args.valid)
    caches = [Path(args.train), Path(args.valid)]
    # The precision is what ran, not the param: `auto` means bf16 on one machine and fp32 on another.
    settings = {**cfg.fingerprint_inputs(), "train": params.train.model_dump(), "precision": compute.precision}
    inputs = training_inputs(args.model, arch, settings, caches, cfg.encoder_weights)
    store = ResumeStore(Path(args.resume), inputs, Path(args.live))
    rank0 = distributed.rank() == 0
    # Rank 0 puts the dvclive folder back with the state and says so; the others only read the state.
    state = store.load() if rank0 else load_state(store.path, inputs)[0]
    config = _run_config(args, params, cfg, arch, train, compute)
    data = Arrays(train.images, train.masks, train.sizes), Arrays(valid.images, valid.masks, valid.sizes)
    if not rank0:
        fit(config, *data, lambda epoch, record: None, state)  # fit() writes and prints nothing on this rank
        return
    images = plural(len(valid.stems), "image")
    print(f"train {args.model}: {len(train.stems)} train / {len(valid.stems)} valid {images}; {'; '.join(said)}")
    result = _fit_logged(config, data, state, store)
    store.clear()
    label = SCORE_LABELS[result.metric]
    print(
        f"train {args.model}: best valid {label} {result.best_valid:.4f} at epoch {result.best_epoch}, "
        f"stopped after epoch {result.last_epoch}, in {result.seconds:.0f} s → {args.checkpoint}"
    )


def _run_config(
    args: argparse.Namespace,
    params: Params,
    cfg: TrainConfig,
    arch: dict[str, Any],
    train: CachedSplit,
    compute: Compute,
) -> RunConfig:
    """The run's :class:`RunConfig`: the model, its settings, the train cache's classes and scale, the class
    weights for its pixel counts. Raises UserError as :func:`~pipeline.data.balance.class_weights`."""
    weights = class_weights(cfg.class_weights, train.counts)
    return RunConfig(
        args.model,
        arch,
        cfg,
        Path(args.checkpoint),
        train.classes,
        compute,
        sync_batchnorm=params.train.sync_batchnorm,
        resize=train.resize,
        image_size=params.image_size,
        crops_per_image=params.train.crops_per_image,
        class_weights=None if weights is None else tuple(weights.tolist()),
    )


def _fit_logged(
    config: RunConfig, data: tuple[Arrays, Arrays], state: dict[str, Any] | None, store: ResumeStore
) -> FitResult:
    """Rank 0's :func:`fit`: every epoch's record to dvclive in ``store.live_dir`` and the resume state to
    ``store`` after it, each step of the way reported to whoever stops the stage."""
    epochs = config.train.epochs
    # dvcyaml=False: the plots are declared in dvc.yaml, which dvclive must not rewrite.
    with Live(store.live_dir, dvcyaml=False, save_dvc_exp=False, report=None, resume=state is not None) as live:

        def log(epoch: int, record: dict[str, float]) -> None:
            live.step = epoch - 1  # explicit: dvclive's own resume repeats step 0 after one epoch
            for name, value in record.items():
                live.log_metric(name, value)
            live.next_step()

        def save_state(state: dict[str, Any]) -> None:
            store.save(state)
            done = state["epoch"]
            report_progress(f"{config.model} after epoch {done} of {epochs}", f"`dvc repro` resumes after epoch {done}")

        report_progress(f"{config.model} in its first epoch", "`dvc repro` starts its training again")
        result = fit(config, *data, log, state, save_state)
        live.summary["last_epoch"] = result.last_epoch
    return result


if __name__ == "__main__":
    sys.exit(run_stage(main))
