import pytest
import yaml

from pipeline.errors import UserError
from pipeline.params import get_float, load_params, train_config
from tests.conftest import REPO

SHARED = {
    "epochs": 3,
    "batch_size": 4,
    "lr": 0.001,
    "weight_decay": 0.0,
    "scheduler": "cosine",
    "loss": "bce_dice",
    "seed": 0,
    "augment": "flip",
}


def test_model_section_overrides_shared_keys_and_keeps_arch_options():
    params = {**SHARED, "unet": {"base_channels": 8, "lr": 0.01}, "resnet34_unet": {"bilinear": True}}
    unet_cfg, unet_arch = train_config(params, "unet")
    res_cfg, res_arch = train_config(params, "resnet34_unet")
    assert unet_cfg.lr == 0.01 and res_cfg.lr == 0.001
    assert unet_arch == {"base_channels": 8}
    assert res_arch == {"bilinear": True}


def test_exponent_without_decimal_point_is_read_as_a_number():
    # PyYAML (YAML 1.1) parses 3e-4 as a string; `dvc exp run -S lr=3e-4` may write it that way.
    params = yaml.safe_load("lr: 3e-4")
    assert isinstance(params["lr"], str)
    assert get_float(params, "lr") == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", 0, "lr must be > 0"),
        ("lr", "fast", "lr must be a number"),
        ("epochs", 0, "epochs must be >= 1"),
        ("batch_size", 2.5, "batch_size must be an integer"),
        ("loss", "focal", "loss must be one of bce_dice, dice, bce"),
        ("scheduler", "step", "scheduler must be one of cosine, constant"),
        ("augment", "yes", "augment must be one of none, flip, full"),
        ("optimizer", "adam", "optimizer must be one of adamw, sgd"),
        ("warmup_epochs", 3, r"warmup_epochs must be in \[0.0, 2\]"),
        ("accumulate_steps", 0, "accumulate_steps must be >= 1"),
        ("num_workers", -1, "num_workers must be auto or an integer >= 0, got -1"),
        ("num_workers", True, "num_workers must be auto or an integer >= 0, got True"),
        ("compile", "yes", "compile must be true or false, got 'yes'"),
        ("init", "xavier", "init must be one of default, kaiming"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(key, value, message):
    with pytest.raises(UserError, match=message):
        train_config({**SHARED, key: value, "unet": {}}, "unet")


def test_missing_key_and_missing_section_are_named():
    shared = dict(SHARED)
    del shared["seed"]
    with pytest.raises(UserError, match="missing key seed"):
        train_config({**shared, "unet": {}}, "unet")
    with pytest.raises(UserError, match="'unet' must be a section"):
        train_config(SHARED, "unet")


def test_load_params_errors(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_params(bad)


def test_the_shipped_params_file_is_valid_for_both_models():
    params = load_params(REPO / "params.yaml")
    for model in ("unet", "resnet34_unet"):
        cfg, _ = train_config(params, model)
        assert cfg.epochs >= 1
    assert params["image_size"] % 32 == 0


def test_keys_added_later_default_to_the_first_release_behaviour():
    cfg, _ = train_config({**SHARED, "unet": {}}, "unet")
    assert (cfg.optimizer, cfg.warmup_epochs, cfg.grad_clip, cfg.accumulate_steps, cfg.patience) == (
        "adamw",
        0.0,
        0.0,
        1,
        0,
    )
    assert (cfg.init, cfg.encoder_weights, cfg.zero_init_residual, cfg.compile) == ("default", "none", False, False)


def test_model_level_training_keys_are_not_architecture_options():
    section = {"decoder_channels": [8, 8, 8, 4, 4], "encoder_weights": "w.pth", "zero_init_residual": True}
    cfg, arch = train_config({**SHARED, "resnet34_unet": section}, "resnet34_unet")
    assert arch == {"decoder_channels": [8, 8, 8, 4, 4]}
    assert cfg.encoder_weights == "w.pth" and cfg.zero_init_residual


def test_num_workers_does_not_change_the_resume_fingerprint():
    a, _ = train_config({**SHARED, "num_workers": 0, "unet": {}}, "unet")
    b, _ = train_config({**SHARED, "num_workers": 4, "unet": {}}, "unet")
    c, _ = train_config({**SHARED, "num_workers": 4, "lr": 0.002, "unet": {}}, "unet")
    assert a.fingerprint_inputs() == b.fingerprint_inputs() != c.fingerprint_inputs()


def test_augmentation_section_is_read_into_options():
    aug = {"vflip": True, "degrees": 15, "crop_scale": [0.6, 1], "jitter": 0.1}
    cfg, _ = train_config({**SHARED, "augmentation": aug, "unet": {}}, "unet")
    o = cfg.augmentation
    assert (o.hflip, o.vflip, o.degrees, o.crop_scale, o.jitter) == (True, True, 15.0, (0.6, 1.0), 0.1)


@pytest.mark.parametrize(
    ("augmentation", "message"),
    [
        ([1], "'augmentation' must be a section"),
        ({"rotate": 10}, "augmentation has no key rotate; valid: hflip, vflip, degrees, crop_scale, jitter"),
        ({"crop_scale": 0.5}, r"augmentation.crop_scale must be a list like \[0.5, 1.0\], got 0.5"),
        ({"crop_scale": [0.9, 0.5]}, "augmentation: .*crop_scale"),
        ({"vflip": "no"}, "augmentation.vflip must be true or false"),
        ({"jitter": "strong"}, "augmentation.jitter must be a number"),
    ],
)
def test_bad_augmentation_options_are_one_line_errors(augmentation, message):
    with pytest.raises(UserError, match=message):
        train_config({**SHARED, "augmentation": augmentation, "unet": {}}, "unet")
