"""The CPU guard before torch: each model's workload from params, and the bound that lets small runs through
without importing torch, counting or timing anything."""

import re

import pytest
import yaml

import pipeline.train.estimate
from pipeline.core.params import parse_params
from pipeline.data.sizes import SplitSizes, split_sizes
from pipeline.train import workload
from pipeline.train.cpu_guard import check_cpu_time
from pipeline.train.estimate import Cost, model_cost
from pipeline.train.workload import MAX_TRAIN_FLOPS_PER_PIXEL, Workload, workloads
from tests.support import REPO, TINY, merge, shipped_params


def _params(**changes):
    return parse_params(merge(shipped_params(), changes))


def test_workloads_take_each_models_overrides_the_crops_and_kept_aspect_sides():
    params = _params(
        epochs=10, image_size=96, unet={"epochs": 3}, train={"crops_per_image": 2},
        preprocess={"resize": "keep_aspect", "short_side": 128},
    )  # fmt: skip
    unet, resnet = workloads(params, SplitSizes(train=50, valid=7))
    assert unet == Workload("unet", 3, 16, train_images=100, side=96, valid_images=7, valid_side=128)
    assert (resnet.model, resnet.epochs) == ("resnet34_unet", 10)
    assert unet.pixel_passes == 3 * (100 * 96**2 + 7 * 128**2)


@pytest.fixture
def guard_calls(monkeypatch) -> list:
    """The loads each call of the measuring guard got; the guard itself answers "measured"."""
    calls = []
    monkeypatch.setattr(pipeline.train.estimate, "guard", lambda params, loads: calls.append(loads) or "measured")
    return calls


def test_a_run_that_cannot_take_an_hour_is_let_through_unmeasured(guard_calls):
    assert check_cpu_time(_params(**TINY)) is None  # the tests' tiny pipelines
    assert guard_calls == []


def test_the_defaults_go_on_to_the_measuring_guard_unless_a_device_is_asked(guard_calls, monkeypatch):
    assert check_cpu_time(_params()) == "measured"
    assert [load.train_images for load in guard_calls[0]] == [3312, 3312]
    assert check_cpu_time(_params(device="cpu")) is None
    assert check_cpu_time(_params(device="cuda")) is None
    assert len(guard_calls) == 1


def test_a_local_folder_not_there_yet_is_left_to_the_download_stage(guard_calls, tmp_path):
    assert check_cpu_time(_params(data={"source": str(tmp_path / "missing")})) is None
    assert guard_calls == []


def test_the_bound_before_torch_exceeds_both_models_counted_flops_per_pixel():
    # The bound must hold for the widths one trains on a CPU, with room for wider ones: 10x the defaults.
    params = _params()
    for load in workloads(params, SplitSizes(1, 1)):
        arch = {"unet": {"base_channels": 64}, "resnet34_unet": {}}[load.model]
        cost = model_cost(load, arch)
        assert isinstance(cost, Cost) and cost.valid < cost.train
        assert 10 * cost.train / load.side**2 < MAX_TRAIN_FLOPS_PER_PIXEL, load.model


def test_the_slowest_rate_decides_what_cannot_take_an_hour():
    assert workload.cannot_take_an_hour(0.99 * workload.HOUR_S * workload.SLOWEST_RATE)
    assert not workload.cannot_take_an_hour(1.01 * workload.HOUR_S * workload.SLOWEST_RATE)


def _makefile_cpu_settings() -> dict[str, object]:
    """The Makefile's CPU_SETTINGS (`make repro-cpu`), key → value as `dvc exp run -S` reads them (YAML)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("CPU_SETTINGS ="))
    pairs = re.findall(r"-S (\S+?)=(\S+)", line)
    return {key: yaml.safe_load(value) for key, value in pairs}


def test_the_makefile_cpu_settings_are_the_readme_run(pets_mini):
    settings = _makefile_cpu_settings()
    assert len(settings) == 9 and settings["data.source"] == "$(CPU_DATA)"
    nested: dict = {"data": {"source": str(pets_mini)}}
    for key, value in settings.items():
        *sections, name = key.split(".")
        if key != "data.source":
            target = nested
            for section in sections:
                target = target.setdefault(section, {})
            target[name] = value
    params = _params(**nested)
    sizes = split_sizes(params.data, params.split)
    assert sizes == SplitSizes(320, 36)  # README: 320 train / 36 valid
    assert {(load.epochs, load.batch_size, load.side) for load in workloads(params, sizes)} == {(40, 8, 128)}
