"""ONNX export: dynamic batch and size, parity with PyTorch through ONNX Runtime, metadata, all-or-nothing."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.core.errors import UserError
from pipeline.data.classes import BINARY_PETS, Classes, classes_to_json
from pipeline.evaluate.export import export_checked
from pipeline.evaluate.inference import load_model, onnx_forward, torch_forward
from pipeline.models.registry import build_model
from tests.support import SQUARE_32, SQUARE_64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("resnet34_unet", decoder_channels=[8, 8, 8, 4, 4]).eval()
    path = tmp_path_factory.mktemp("onnx") / "r.onnx"
    images = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    meta = {
        "model": "resnet34_unet",
        "image_size": "64",
        "resize": json.dumps(SQUARE_64),
        "classes": json.dumps(classes_to_json(BINARY_PETS)),
    }
    diff = export_checked(model, path, meta, images, 18, 1e-3)
    return model, path, diff


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (5, 3, 96, 64), (2, 3, 160, 224)])
def test_onnx_matches_pytorch_at_any_batch_and_multiple_of_32(exported, shape):
    model, path, _ = exported
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    onnx_logits = onnx_forward(path)[0](x)
    assert onnx_logits.shape == (shape[0], 1, *shape[2:])
    assert np.abs(onnx_logits - torch_forward(model, torch.device("cpu"))(x)).max() <= 1e-3


def test_export_records_what_it_is_and_its_parity(exported):
    _, path, diff = exported
    assert 0.0 <= diff <= 1e-3
    loaded = load_model(path, torch.device("cpu"))
    assert loaded.name == "resnet34_unet" and loaded.image_size == 64
    assert float(loaded.info["onnx_max_abs_diff"]) == diff


def test_a_failed_parity_check_writes_nothing(tmp_path):
    model = build_model("unet", base_channels=4).eval()
    images = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(UserError, match=r"differ from PyTorch by .* > export.max_abs_diff"):
        export_checked(model, tmp_path / "u.onnx", {"model": "unet", "image_size": "32"}, images, 18, -1.0)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_onnx_is_one_line(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not an ONNX model"):
        load_model(bad, torch.device("cpu"))
    with pytest.raises(UserError, match="ONNX model not found"):
        load_model(tmp_path / "none.onnx", torch.device("cpu"))


def test_an_onnx_model_that_is_not_a_petseg_export_is_one_line(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [x])
    graph.output[0].name = "y"
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(UserError, match="not a petseg export"):
        load_model(tmp_path / "other.onnx", torch.device("cpu"))


def test_a_three_class_model_exports_with_parity_and_its_classes(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", 3, base_channels=4).eval()
    classes = Classes(("background", "pet", "boundary"))
    images = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
    meta = {
        "model": "unet",
        "image_size": "32",
        "resize": json.dumps(SQUARE_32),
        "classes": json.dumps(classes_to_json(classes)),
    }
    diff = export_checked(model, tmp_path / "u.onnx", meta, images, 18, 1e-3)
    assert 0.0 <= diff <= 1e-3
    loaded = load_model(tmp_path / "u.onnx", torch.device("cpu"))
    assert loaded.classes == classes and not loaded.classes.binary
    x = np.random.default_rng(3).normal(size=(3, 3, 64, 96)).astype(np.float32)
    logits = loaded.forward(x)
    assert logits.shape == (3, 3, 64, 96)  # every class's logit, at another batch and size than traced
    reference = torch_forward(model, torch.device("cpu"))(x)
    assert np.abs(logits - reference).max() <= 1e-3
    assert (logits.argmax(1) == reference.argmax(1)).mean() > 0.99
