"""What training both models will compute, from params.yaml alone (no torch), and the bound that lets a
small run through without counting or timing anything (:func:`cannot_take_an_hour`): the first steps of
the validate stage's CPU guard, :mod:`pipeline.train.cpu_guard`.
"""

from dataclasses import dataclass

from pipeline.core.param_schema import MODEL_SECTIONS, Params
from pipeline.data.sizes import SplitSizes

HOUR_S = 3600.0
# A training rate no CPU worth training on falls below, in FLOP/s: a tenth of one Zen 4 core's measured fp32
# rate (the 2-core VM trains the UNet at 190 fp32 / 425 bf16 GFLOP/s; docs/performance.md). A run whose
# FLOPs take under an hour even at this rate is let through without measuring.
SLOWEST_RATE = 1e10
# A generous bound of either model's training FLOPs per pixel of one image (forward and backward): 20x the
# default UNet's 4.4 MFLOP (base 64; the ResNet34-UNet's is 0.66 M). For the bound before torch is
# imported; tests/train/test_workload.py checks it against the counted FLOPs.
MAX_TRAIN_FLOPS_PER_PIXEL = 1e8


@dataclass(frozen=True)
class Workload:
    """One model's training as params.yaml sets it: ``model`` (a registry name) trains ``epochs`` epochs of
    ``train_images`` images (random crops included) in batches of ``batch_size``, each ``side`` x ``side``
    pixels, and validates ``valid_images`` whole each epoch at ``valid_side`` x ``valid_side`` pixels (under
    kept aspect the short side: the longer side's extra pixels are not counted)."""

    model: str
    epochs: int
    batch_size: int
    train_images: int
    side: int
    valid_images: int
    valid_side: int

    @property
    def pixel_passes(self) -> int:
        """The pixels that go through the model over the whole training, train and valid."""
        return self.epochs * (self.train_images * self.side**2 + self.valid_images * self.valid_side**2)


def workloads(params: Params, sizes: SplitSizes) -> list[Workload]:
    """Each model's :class:`Workload` (in ``MODEL_SECTIONS`` order) for ``params`` on splits of ``sizes``,
    after the model's own overrides of ``epochs`` and ``batch_size``."""
    loads = []
    for model in MODEL_SECTIONS:
        merged = params.merged(model)
        loads.append(
            Workload(
                model=model,
                epochs=merged["epochs"],
                batch_size=merged["batch_size"],
                train_images=sizes.train * params.train.crops_per_image,
                side=params.image_size,
                valid_images=sizes.valid,
                valid_side=params.cache_side,
            )
        )
    return loads


def cannot_take_an_hour(flops: float) -> bool:
    """Whether ``flops`` take under an hour even at :data:`SLOWEST_RATE`."""
    return flops / SLOWEST_RATE < HOUR_S
