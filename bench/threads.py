"""Benchmark: 1 or 2 intra-op threads for a training step, on quiet cores and beside another job.

Usage: python bench/threads.py [--seconds 20] [--model unet] [--precision bf16]

Each setting runs in a fresh process (OpenMP reads its settings once): the UNet (base 16) or the
ResNet34-UNet, batch 8 at 128 px, in the precision and memory format the pipeline picks on this CPU,
forward, loss, backward and AdamW for ``--seconds`` after a warm-up; it prints images/s. "Beside
another job" starts, first, a second process that trains the same model on one thread without
pause (another experiment of a DVC queue, say) and stops it after. Both with OpenMP's default wait
policy (threads spin a while before sleeping) and with ``OMP_WAIT_POLICY=PASSIVE`` (they sleep at once).

Not a test: numbers vary with load; the ratios measured in one run are the point.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, table  # noqa: E402

WORKER = """
import sys, time, torch
sys.path.insert(0, sys.argv[1])
from pipeline.core.device import autocast, memory_format
from pipeline.models.registry import build_model
from pipeline.train.losses import bce_dice_loss
model_name, threads, seconds, dtype = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
dtype = {"bf16": torch.bfloat16, "fp32": None}[dtype]
torch.set_num_threads(threads)
torch.manual_seed(0)
options = {"base_channels": 16} if model_name == "unet" else {}
fmt = memory_format("cpu")
model = build_model(model_name, **options).to(memory_format=fmt).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn(8, 3, 128, 128).contiguous(memory_format=fmt)
y = (torch.rand(8, 1, 128, 128) > 0.5).float()
def step():
    with autocast("cpu", dtype):
        logits = model(x)
    loss = bce_dice_loss(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
step()
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds or n == 0:
    step()
    n += 8
print(n / (time.perf_counter() - start))
"""


def train_rate(model: str, threads: int, seconds: float, precision: str, env: dict[str, str]) -> float:
    root = str(Path(__file__).resolve().parents[1])
    args = [sys.executable, "-c", WORKER, root, model, str(threads), str(seconds), precision]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", choices=("unet", "resnet34_unet"), default="unet")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args()
    print(f"{machine()}; {args.model}, {args.precision} channels_last, batch 8 at 128 px, {args.seconds:g} s each")
    rows = []
    for policy in ("default", "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        if policy == "PASSIVE":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        for beside in (False, True):
            other = None
            if beside:  # another job's training on one core, running all the while
                root = str(Path(__file__).resolve().parents[1])
                job = [sys.executable, "-c", WORKER, root, args.model, "1", "3600", args.precision]
                other = subprocess.Popen(job, env=env, stdout=subprocess.DEVNULL)
                time.sleep(5)  # past its warm-up
            try:
                rates = {t: train_rate(args.model, t, args.seconds, args.precision, env) for t in (1, 2)}
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            rows.append(
                {
                    "OMP_WAIT_POLICY": policy,
                    "cores": "shared with another job" if beside else "quiet",
                    "1 thread, images/s": f"{rates[1]:.1f}",
                    "2 threads, images/s": f"{rates[2]:.1f}",
                    "2 threads / 1": f"{rates[2] / rates[1]:.2f}x",
                }
            )
    print(table(rows))


if __name__ == "__main__":
    main()
