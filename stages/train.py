"""Stages `train@unet`, `train@resnet34_unet`: fit one model, keep the best-valid-Dice weights.

Resumable: a run killed at any moment continues after its last completed epoch when the stage
runs again with the same settings (see pipeline/train/resume.py for where the state lives and why).

With ``train.nproc`` > 1 the stage starts itself again as that many ranks under torchrun and waits
for them (pipeline/train/distributed.py), so `dvc repro` and `dvc exp run` stay the entry points. With
``train.nnodes`` > 1 every machine runs this stage, and their ranks meet at ``train.rdzv_endpoint``.
Global rank 0 alone writes the checkpoint, the dvclive folder and the resume state, and prints; it
sends the resume state it read to the other ranks, so a killed multi-process run resumes like a
single one.
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
from pipeline.data.device_augment import augment_on
from pipeline.models.registry import check_options
from pipeline.train import distributed
from pipeline.train.config import RunConfig, TrainConfig, train_config
from pipeline.train.fit import FitResult, fit
from pipeline.train.resume import ResumeStore, check_same_inputs, training_inputs
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
    distributed.pin_device(params.device)  # first: choosing the device makes a CUDA call
    cfg, arch = train_config(params, args.model)
    check_options(args.model, arch)  # before dvclive creates its folder
    train, device = params.train, choose_device(params.device).value
    # Checked before any rank starts, so that a bad setting fails in one line, once (on each machine).
    distributed.per_rank_batch(cfg.batch_size, train.ranks)
    distributed.check_sync_batchnorm(train.sync_batchnorm, train.ranks, device.type)
    if train.ranks > 1 and not distributed.launched():
        distributed.check_gpus(train.nproc, device.type)
        machines = f", {train.ranks} on {train.nnodes} machines" if train.nnodes > 1 else ""
        print(f"train {args.model}: {train.nproc} {plural(train.nproc, 'process')} on {device}{machines}")
        # Every machine's stage gives the same rendezvous name: one training a model.
        code = distributed.launch(train, f"petseg-{args.model}", "stages.train", sys.argv[1:] if argv is None else argv)
        if code:
            raise UserError(f"train {args.model}: a training process failed with exit code {code} (see above)")
        return
    with distributed.process_group(device.type):
        run(args, params, cfg, arch)


def run(args: argparse.Namespace, params: Params, cfg: TrainConfig, arch: dict[str, Any]) -> None:
    """Train in this process: the only one, or one rank of the process group."""
    if distributed.world_size() != params.train.ranks:
        raise UserError(
            f"params.yaml: train.nnodes x train.nproc is {params.train.ranks} but torchrun started "
            f"{distributed.world_size()} processes; run `python -m stages.train` without torchrun, it starts them"
        )
    compute, said = decide(params.device, params.precision, params.threads)
    said.append(choose_compile(cfg.compile, compute.device.type).why)
    train, valid = load_cache(args.train), load_cache(args.valid)
    split_bytes = sum(array.nbytes for array in (train.images, train.masks, train.sizes))
    where = augment_on(params.train.augment_on, compute.device, split_bytes)
    said = [*said, where.why]
    caches = [Path(args.train), Path(args.valid)]
    # The precision and augment_on are what ran, not the params: `auto` decides differently on other machines.
    settings = {
        **cfg.fingerprint_inputs(),
        "train": params.train.fingerprint_inputs(),
        "precision": compute.precision,
        "augment_on": where.value,
    }
    inputs = training_inputs(args.model, arch, settings, caches, cfg.encoder_weights)
    check_same_inputs(args.model, distributed.gather(inputs))  # other machines read their own files
    store = ResumeStore(
        Path(args.resume), inputs, Path(args.live), every_s=params.train.resume_every_s, epochs=cfg.epochs
    )
    rank0 = distributed.rank() == 0
    # Rank 0 reads the state, puts the dvclive folder back and says so; the others, maybe on machines
    # without the file, get its copy, so that every rank starts after the same epoch.
    state = distributed.from_rank0(store.load() if rank0 else None)
    config = _run_config(args, params, cfg, arch, train, compute, where.value)
    data = Arrays(train.images, train.masks, train.sizes), Arrays(valid.images, valid.masks, valid.sizes)
    if not rank0:
        if distributed.local_rank() == 0:  # the first rank of another machine: say where the outputs go
            print(f"train {args.model}: training with rank 0 on {distributed.rank0_host()}, which writes the outputs")
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
    where: str,
) -> RunConfig:
    """The run's :class:`RunConfig`: the model, its settings, the train cache's classes and scale, the class
    weights for its pixel counts, the geometric augmentation on the loader's workers or the device (``where``).
    Raises UserError as :func:`~pipeline.data.balance.class_weights`."""
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
        augment_on=where,
    )


def _fit_logged(
    config: RunConfig, data: tuple[Arrays, Arrays], state: dict[str, Any] | None, store: ResumeStore
) -> FitResult:
    """Rank 0's :func:`fit`: every epoch's record to dvclive in ``store.live_dir`` and the resume state to
    ``store`` after it (written when due, and when the stage is stopped, then saying which epoch a rerun
    resumes after)."""
    epochs = config.train.epochs
    # dvcyaml=False: the plots are declared in dvc.yaml, which dvclive must not rewrite.
    with Live(store.live_dir, dvcyaml=False, save_dvc_exp=False, report=None, resume=state is not None) as live:

        def log(epoch: int, record: dict[str, float]) -> None:
            live.step = epoch - 1  # explicit: dvclive's own resume repeats step 0 after one epoch
            for name, value in record.items():
                live.log_metric(name, value)
            live.next_step()

        def resumes_after(done: int) -> None:
            report_progress(f"{config.model} after epoch {done} of {epochs}", f"`dvc repro` resumes after epoch {done}")

        report_progress(f"{config.model} in its first epoch", "`dvc repro` starts its training again")
        with store.writing_when_interrupted(resumes_after):
            result = fit(config, *data, log, state, store.save)
        live.summary["last_epoch"] = result.last_epoch
    return result


if __name__ == "__main__":
    sys.exit(run_stage(main))
