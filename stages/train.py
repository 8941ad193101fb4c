"""Stages `train-unet`, `train-resnet34unet`: fit one model, keep the best-valid-Dice weights.

Resumable: a run killed at any moment continues after its last completed epoch when the stage
runs again with the same settings (see pipeline/resume.py for where the state lives and why).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dvclive import Live

from pipeline.cache import load_cache
from pipeline.device import select_device
from pipeline.errors import run_stage
from pipeline.models import check_options
from pipeline.params import load_params
from pipeline.resume import ResumeStore, training_inputs
from pipeline.train_config import train_config
from pipeline.training import fit


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read the shared training keys and the model's section, train, log with dvclive."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--model", required=True, help="registry name: unet or resnet34_unet")
    parser.add_argument("--train", required=True, help="train split cache (.npz)")
    parser.add_argument("--valid", required=True, help="valid split cache (.npz)")
    parser.add_argument("--checkpoint", required=True, help="output .pt file")
    parser.add_argument("--live", required=True, help="dvclive output folder")
    parser.add_argument("--resume", required=True, help="resume state file (untracked; deleted when training ends)")
    args = parser.parse_args(argv)
    cfg, arch = train_config(load_params(args.params), args.model)
    check_options(args.model, arch)  # before dvclive creates its folder
    train, valid = load_cache(args.train), load_cache(args.valid)
    caches = [Path(args.train), Path(args.valid)]
    inputs = training_inputs(args.model, arch, cfg.fingerprint_inputs(), caches, cfg.encoder_weights)
    store = ResumeStore(Path(args.resume), inputs, Path(args.live))
    state = store.load()
    print(f"train {args.model}: {len(train.stems)} train / {len(valid.stems)} valid images on {select_device()}")
    # dvcyaml=False: the plots are declared in dvc.yaml, which dvclive must not rewrite.
    with Live(args.live, dvcyaml=False, save_dvc_exp=False, report=None, resume=state is not None) as live:

        def log(epoch: int, record: dict[str, float]) -> None:
            live.step = epoch - 1  # explicit: dvclive's own resume repeats step 0 after one epoch
            for name, value in record.items():
                live.log_metric(name, value)
            live.next_step()

        result = fit(
            args.model,
            arch,
            cfg,
            (train.images, train.masks),
            (valid.images, valid.masks),
            Path(args.checkpoint),
            log,
            state=state,
            save_state=store.save,
        )
        live.summary["last_epoch"] = result.last_epoch
    store.clear()
    print(
        f"train {args.model}: best valid Dice {result.best_valid_dice:.4f} at epoch {result.best_epoch}, "
        f"stopped after epoch {result.last_epoch}, in {result.seconds:.0f} s → {args.checkpoint}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
