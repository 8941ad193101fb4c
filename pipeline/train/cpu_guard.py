"""The validate stage's guard against a CPU run of many hours (:func:`check_cpu_time`).

The shipped defaults are for a GPU; on a CPU they train for a day or more. The guard stops such a run in
the validate stage, before the download, in one line with its estimate and the two ways on. This module
imports no torch: a run that is small whatever the architecture (the tests' tiny pipelines) is let through
on a bound alone (:mod:`pipeline.train.workload`); only a run that may take hours pays for torch, the FLOP
count and the timed steps of :mod:`pipeline.train.estimate`.
"""

from pipeline.core.param_schema import Params
from pipeline.data.sizes import split_sizes
from pipeline.train.workload import MAX_TRAIN_FLOPS_PER_PIXEL, cannot_take_an_hour, workloads


def check_cpu_time(params: Params) -> str | None:
    """The validate stage's guard: raise UserError, in one line with the estimate and the two ways on, when
    ``device: auto`` finds no GPU and training both models would take over an hour on this CPU
    (:func:`pipeline.train.estimate.guard`). Returns the estimate's line for a run that is let through after
    measuring, else None: ``device`` other than auto (asked for), a local folder not readable yet (the
    download stage reports it), or a run under an hour even at :data:`~pipeline.train.workload.SLOWEST_RATE` with
    :data:`MAX_TRAIN_FLOPS_PER_PIXEL` (nothing imported, counted or timed).
    """
    if params.device != "auto":
        return None
    sizes = split_sizes(params.data, params.split)
    if sizes is None:
        return None
    loads = workloads(params, sizes)
    if cannot_take_an_hour(MAX_TRAIN_FLOPS_PER_PIXEL * sum(load.pixel_passes for load in loads)):
        return None
    # torch and the models load only here, for a run that may take hours: the many small runs stay fast.
    from pipeline.train.estimate import guard

    return guard(params, loads)
