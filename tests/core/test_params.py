"""The params.yaml schema: typed views, model overrides, and one-line errors naming the key."""

import copy
import json
import math

import pytest
import yaml

import stages.validate
from pipeline.core.errors import UserError
from pipeline.core.messages import nearest_key
from pipeline.core.params import (
    MODEL_SECTIONS,
    AugmentOptions,
    load_params,
    parse_params,
    read_download_inputs,
)
from pipeline.core.runner import run_stage
from pipeline.train.config import train_config
from tests.support import REPO, shipped_params

SHIPPED = shipped_params()


def params_with(**changes) -> dict:
    """The shipped params with top-level keys replaced; a dict value is merged into its section."""
    params = copy.deepcopy(SHIPPED)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key].update(value)
        else:
            params[key] = value
    return params


def test_model_section_overrides_shared_keys_and_keeps_arch_options():
    params = parse_params(params_with(lr=0.001, unet={"base_channels": 8, "lr": 0.01}, resnet34_unet={"ema": 0.999}))
    unet_cfg, unet_arch = train_config(params, "unet")
    res_cfg, res_arch = train_config(params, "resnet34_unet")
    assert unet_cfg.lr == 0.01 and res_cfg.lr == 0.001
    assert unet_cfg.ema == 0 and res_cfg.ema == 0.999
    assert unet_arch == {"base_channels": 8, "bilinear": False}
    assert res_arch == {"decoder_channels": SHIPPED["resnet34_unet"]["decoder_channels"], "bilinear": False}


def test_exponent_without_decimal_point_is_read_as_a_number():
    # PyYAML (YAML 1.1) parses 3e-4 as a string; `dvc exp run -S lr=3e-4` may write it that way.
    assert isinstance(yaml.safe_load("lr: 3e-4")["lr"], str)
    assert parse_params(params_with(lr="3e-4")).lr == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0}, "lr: must be greater than 0, got 0"),
        ({"lr": -1}, "lr: must be greater than 0, got -1"),
        ({"lr": "fast"}, "lr: must be a valid number"),
        ({"lr": True}, "lr: must be a number, not true/false"),
        ({"lr": math.nan}, "lr: must be a finite number"),
        ({"lr": "inf"}, "lr: must be a finite number"),
        ({"epochs": 0}, "epochs: must be greater than or equal to 1, got 0"),
        ({"batch_size": 2.5}, "batch_size: must be a valid integer"),
        ({"seed": -1}, "seed: must be greater than or equal to 0"),
        ({"loss": "focal"}, "loss: must be 'ce_dice', 'dice' or 'ce', got 'focal'"),
        ({"scheduler": "step"}, "scheduler: must be 'cosine', 'constant', 'onecycle' or 'plateau'"),
        ({"augment": "yes"}, "augment: must be 'none', 'flip' or 'full'"),
        ({"optimizer": "adam"}, "optimizer: must be 'adamw' or 'sgd'"),
        ({"epochs": 3, "warmup_epochs": 3}, r"unet: warmup_epochs \(3.0\) must leave at least one epoch"),
        ({"accumulate_steps": 0}, "accumulate_steps: must be greater than or equal to 1"),
        ({"ema": 1}, "ema: must be less than 1, got 1$"),
        ({"ema": -0.1}, "ema: must be greater than or equal to 0, got -0.1$"),
        ({"resnet34_unet": {"ema": 1.5}}, "resnet34_unet.ema: must be less than 1, got 1.5$"),
        ({"num_workers": -1}, "num_workers: must be auto or a whole number >= 0, got -1"),
        ({"num_workers": True}, "num_workers: must be auto or a whole number >= 0, got True"),
        ({"compile": "yes"}, "compile: must be auto, true or false, got 'yes'"),
        ({"compile": 1}, "compile: must be auto, true or false, got 1"),
        ({"init": "xavier"}, "init: must be 'default' or 'kaiming'"),
        ({"image_size": 100}, "image_size must be a multiple of 32, got 100"),
        ({"image_size": 16}, "image_size: must be greater than or equal to 32"),
        ({"unet": {"bilinear": "false"}}, "unet.bilinear: must be a valid boolean, got 'false'"),
        ({"unet": {"lr": -2}}, "unet.lr: must be greater than 0, got -2"),
        ({"resnet34_unet": {"decoder_channels": [8, 8, 8]}}, "resnet34_unet.decoder_channels: list should have"),
        ({"resnet34_unet": {"decoder_channels": [8, 8, 8, 8, 0]}}, "resnet34_unet.decoder_channels: must be greater"),
        ({"evaluate": {"threshold": 1.0}}, "evaluate.threshold: must be a number strictly between 0 and 1, or auto"),
        ({"evaluate": {"threshold": "high"}}, "evaluate.threshold: must be a number strictly between 0 and 1"),
        ({"evaluate": {"tta": "vflip"}}, "evaluate.tta: must be 'none' or 'hflip'"),
        ({"export": {"opset": 17}}, "export.opset: must be greater than or equal to 18"),
        ({"data": {"max_bad_fraction": 2}}, "data.max_bad_fraction: must be less than or equal to 1, got 2"),
        ({"split": {"valid_fraction": -0.1}}, "split.valid_fraction: must be greater than or equal to 0"),
        ({"preprocess": {"boundary": "edge"}}, "preprocess.boundary: must be 'pet', 'background' or 'ignore'"),
        ({"evaluate": 3}, "evaluate must be a section \\(a mapping\\), got 3"),
        ({"task": "pets"}, "task: must be 'auto', 'binary' or 'trimap'"),
        ({"class_weights": "balanced"}, "class_weights: must be none, median_frequency or \\[w0, w1, ...\\]"),
        ({"class_weights": [1.0]}, "class_weights: must be none, median_frequency or"),
        ({"class_weights": [1.0, -2.0]}, "class_weights: must be none, median_frequency or"),
        ({"class_weights": [1.0, True]}, "class_weights: must be none, median_frequency or"),
        ({"loss": "dice", "class_weights": "median_frequency"}, "unet: class_weights weigh the cross-entropy"),
        ({"preprocess": {"resize": "crop"}}, "preprocess.resize: must be 'square' or 'keep_aspect'"),
        ({"preprocess": {"short_side": 16}}, "preprocess.short_side: must be auto or a whole number of pixels >= 32"),
        ({"evaluate": {"window": 100}}, "evaluate.window: must be 0 \\(whole images\\) or a multiple of 32"),
        ({"augmentation": {"scale": [2.0, 0.5]}}, "augmentation: .*scale must be two factors 0 < lo <= hi"),
        ({"train": {"crops_per_image": 0}}, "train.crops_per_image: must be greater than or equal to 1"),
        ({"train": {"augment_on": "gpu"}}, "train.augment_on: must be 'auto', 'device' or 'workers', got 'gpu'"),
        ({"train": {"nnodes": 2}}, "train: nnodes is 2 but rdzv_endpoint is not set; set it to host:port of one"),
        ({"train": {"rdzv_endpoint": "node0"}}, "train.rdzv_endpoint: must be null or host:port, a port from 1 to"),
        ({"train": {"rdzv_endpoint": ":29400"}}, "train.rdzv_endpoint: must be null or host:port"),
        ({"train": {"rdzv_endpoint": "node0:70000"}}, "train.rdzv_endpoint: must be null or host:port"),
        ({"train": {"rdzv_endpoint": 29400}}, "train.rdzv_endpoint: must be null or host:port"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(changes, message):
    with pytest.raises(UserError, match=f"^params.yaml: {message}") as err:
        parse_params(params_with(**changes))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"learning_rate": 0.001}, "unknown key learning_rate; did you mean lr?"),
        ({"evaluate": {"treshold": 0.4}}, "unknown key evaluate.treshold; did you mean evaluate.threshold?"),
        ({"unet": {"learning_rate": 0.01}}, "unknown key unet.learning_rate; did you mean unet.lr?"),
        ({"threshold": 0.4}, "unknown key threshold; did you mean evaluate.threshold?"),
        ({"augmentation": {"rotate": 10}}, "unknown key augmentation.rotate$"),
    ],
)
def test_unknown_keys_are_named_with_the_nearest_valid_one(changes, message):
    with pytest.raises(UserError, match=f"^params.yaml: {message}"):
        parse_params(params_with(**changes))


def test_unknown_key_is_reported_before_the_missing_one_it_replaced():
    params = params_with()
    params["evaluate"]["treshold"] = params["evaluate"].pop("threshold")
    with pytest.raises(UserError, match=r"unknown key evaluate.treshold; .* \(and 1 more problems\)$"):
        parse_params(params)


def test_nearest_key_prefers_initials_then_spelling():
    keys = ["lr", "epochs", "weight_decay", "threshold"]
    assert nearest_key("learning_rate", keys) == "lr"
    assert nearest_key("treshold", keys) == "threshold"
    assert nearest_key("wieght_decay", keys) == "weight_decay"
    assert nearest_key("colour", keys) is None


def test_missing_key_is_named():
    params = params_with()
    del params["seed"]
    with pytest.raises(UserError, match="^params.yaml: missing key seed; see the shipped params.yaml"):
        parse_params(params)
    params["seed"] = 0
    del params["plot"]
    with pytest.raises(UserError, match="missing key plot"):
        parse_params(params)


def test_load_params_errors(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="bad.yaml: expected a mapping"):
        load_params(bad)


def test_the_shipped_params_file_is_valid_for_both_models():
    params = load_params(REPO / "params.yaml")
    for model in MODEL_SECTIONS:
        cfg, arch = train_config(params, model)
        assert cfg.epochs == SHIPPED["epochs"] and arch["bilinear"] is False


def test_keys_added_later_default_to_the_first_release_behaviour():
    params = params_with()
    for key in ("optimizer", "warmup_epochs", "grad_clip", "accumulate_steps", "ema", "patience", "init", "compile"):
        del params[key]
    for key in ("encoder_weights", "zero_init_residual"):
        del params["resnet34_unet"][key]
    del params["augmentation"]
    cfg, _ = train_config(parse_params(params), "resnet34_unet")
    assert (cfg.optimizer, cfg.warmup_epochs, cfg.grad_clip, cfg.accumulate_steps, cfg.patience) == (
        "adamw",
        0.0,
        0.0,
        1,
        0,
    )
    assert (cfg.init, cfg.encoder_weights, cfg.zero_init_residual, cfg.compile) == ("default", "none", False, False)
    assert cfg.ema == 0  # off
    assert cfg.augmentation == AugmentOptions()


def test_model_level_training_keys_are_not_architecture_options():
    section = {"decoder_channels": [8, 8, 8, 4, 4], "encoder_weights": "w.pth", "zero_init_residual": True}
    cfg, arch = train_config(parse_params(params_with(resnet34_unet=section)), "resnet34_unet")
    assert arch == {"decoder_channels": [8, 8, 8, 4, 4], "bilinear": False}
    assert cfg.encoder_weights == "w.pth" and cfg.zero_init_residual


def test_the_resume_fingerprint_holds_the_rank_count_not_the_machines():
    def train(**keys):
        return parse_params(params_with(train=keys)).train

    two = train(nproc=2).fingerprint_inputs()
    assert train(nproc=1, nnodes=2, rdzv_endpoint="[::1]:29400").fingerprint_inputs() == two
    assert train(nproc=2, rdzv_endpoint="node0:1").fingerprint_inputs() == two  # ignored on one machine
    assert two["ranks"] == 2 and train().fingerprint_inputs()["ranks"] == 1
    assert train(nproc=2, nnodes=2, rdzv_endpoint="node0:29400").ranks == 4


def test_num_workers_and_compile_do_not_change_the_resume_fingerprint():
    def fingerprint(**changes):
        return train_config(parse_params(params_with(**changes)), "unet")[0].fingerprint_inputs()

    assert fingerprint(num_workers=0) == fingerprint(num_workers=4) != fingerprint(num_workers=4, lr=0.002)
    # Speed only: a run killed while compiled resumes eagerly, and the other way round.
    assert fingerprint(compile=True) == fingerprint(compile=False) == fingerprint(compile="auto") != fingerprint(seed=1)
    assert fingerprint(augmentation={"jitter": 0.1}) != fingerprint()
    assert fingerprint(unet={"ema": 0.99}) != fingerprint()  # the average is the checkpoint's weights


def test_augmentation_section_is_read_into_options():
    aug = {"vflip": True, "degrees": 15, "crop_scale": [0.6, 1], "jitter": 0.1}
    cfg, _ = train_config(parse_params(params_with(augmentation=aug)), "unet")
    o = cfg.augmentation
    assert (o.hflip, o.vflip, o.degrees, o.crop_scale, o.jitter) == (True, True, 15.0, (0.6, 1.0), 0.1)


@pytest.mark.parametrize(
    ("augmentation", "message"),
    [
        ([1], "augmentation must be a section"),
        ({"crop_scale": 0.5}, "augmentation.crop_scale: must be a valid tuple, got 0.5"),
        ({"crop_scale": [0.9]}, r"augmentation.crop_scale: has too few items, got \[0.9\]"),
        ({"crop_scale": [0.9, 0.5]}, r"augmentation: crop_scale must be two area fractions .* got \[0.9, 0.5\]$"),
        ({"vflip": "no"}, "augmentation.vflip: must be a valid boolean"),
        ({"jitter": "strong"}, "augmentation.jitter: must be a valid number"),
        ({"degrees": 200}, "augmentation.degrees: must be less than or equal to 180"),
    ],
)
def test_bad_augmentation_options_are_one_line_errors(augmentation, message):
    params = params_with()
    params["augmentation"] = (
        augmentation if not isinstance(augmentation, dict) else {**params["augmentation"], **augmentation}
    )
    with pytest.raises(UserError, match=message):
        parse_params(params)


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        ({"source": "oxford-iiit-pet"}, {"source", "url"}),
        ({"source": "synthetic"}, {"source", "synthetic_images", "synthetic_seed"}),
        ({"source": "/data/pets"}, {"source"}),
    ],
)
def test_validate_stage_keeps_only_the_data_keys_the_source_uses(tmp_path, data, kept):
    params = tmp_path / "params.yaml"
    # device: cpu, as asked: the defaults' GPU-sized training would stop at the CPU guard on this machine.
    params.write_text(yaml.safe_dump(params_with(data=data, device="cpu")))
    out = tmp_path / "download.json"
    assert run_stage(stages.validate.main, ["--params", str(params), "--download-inputs", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written) == kept and written["source"] == data["source"]
    assert read_download_inputs(out).source == data["source"]


def test_validate_stage_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_with(learning_rate=0.001)))
    out = tmp_path / "download.json"
    assert run_stage(stages.validate.main, ["--params", str(params), "--download-inputs", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == "error: params.yaml: unknown key learning_rate; did you mean lr?\n"
    assert not out.exists()


def test_download_inputs_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found; run `dvc repro validate`"):
        read_download_inputs(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"source": "synthetic", "synthetic_images": 1}))
    with pytest.raises(UserError, match="synthetic_images: must be greater than or equal to 4"):
        read_download_inputs(bad)
