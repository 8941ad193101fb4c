"""`petseg predict` with a multi-class model: palette PNGs of class indices, the palette overlay, ONNX, --threshold."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.cli.photos import read_image
from pipeline.data.classes import Classes, classes_to_json
from pipeline.data.colour import model_input
from pipeline.data.decode import resize_image
from pipeline.evaluate.export import export_checked
from pipeline.evaluate.inference import native_labels
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.registry import build_model
from pipeline.report.overlays import palette_overlay
from tests.cli import test_predict
from tests.cli.test_predict import SIZE, error_lines, predict, scene
from tests.support import square

# test_predict's fixtures, shared: its photos in odd sizes and formats, and torch on one thread.
photos, one_thread = test_predict.photos, test_predict.one_thread

CLASSES = Classes(("background", "pet", "boundary"))
PHOTOS = ("jpeg", "rgba", "grey", "palette", "gif")  # 41x57, 64x48, 30x70, 50x50, 36x44: mostly not square


def scene3(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scene` with a blue square of class 2 painted over it: image uint8 (h, w, 3), mask uint8 (h, w)
    in {0, 1, 2}."""
    image, mask = scene(rng, h, w)
    y, x, side = rng.integers(0, h // 2), rng.integers(0, w // 2), max(h, w) // 3
    mask[y : y + side, x : x + side] = 2
    image[y : y + side, x : x + side] = (30, 90, 230)
    return image, mask


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-class 4-channel UNet trained for 40 steps of cross-entropy on :func:`scene3` at 32 px, so all three
    classes show in its masks: the checkpoint unet.pt and its ONNX export unet.onnx (each in a folder of its
    own, so no eval record is found)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("unet", 3, base_channels=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(40):
        images, masks = zip(*(scene3(rng, SIZE, SIZE) for _ in range(4)), strict=True)
        x = model_input(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
        loss = F.cross_entropy(model(x), torch.from_numpy(np.stack(masks)).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = tmp_path_factory.mktemp("multiclass") / "unet.pt"
    classes = classes_to_json(CLASSES)
    save_checkpoint(
        checkpoint, "unet", {"base_channels": 4}, model.state_dict(), out_channels=3, classes=classes, epoch=1,
        valid_dice=0.5, valid_miou=0.4, image_size=SIZE, resize=square(SIZE),
    )  # fmt: skip
    images = np.stack([scene3(rng, SIZE, SIZE)[0] for _ in range(2)])
    x = model_input(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    onnx = tmp_path_factory.mktemp("multiclass_onnx") / "unet.onnx"
    meta = {
        "model": "unet",
        "image_size": str(SIZE),
        "resize": json.dumps(square(SIZE)),
        "classes": json.dumps(classes),
    }
    export_checked(model.eval(), onnx, meta, x, opset=18, tolerance=1e-3)
    return checkpoint, onnx


def read_labels(path: Path) -> tuple[np.ndarray, list[int]]:
    """A palette mask PNG's class indices uint8 (H, W) and its palette (flat RGB list); asserts mode P."""
    with Image.open(path) as img:
        assert img.mode == "P"
        return np.asarray(img), img.getpalette()


def test_native_labels_upsample_the_logits_then_take_the_highest_class_lowest_on_a_tie():
    logits = np.zeros((3, 2, 2), np.float32)
    logits[1, 0, 0] = logits[2, 1, 1] = 1.0  # (0, 1) and (1, 0) tie at 0: the lowest index, 0, wins
    np.testing.assert_array_equal(native_labels(logits, 2, 2), [[1, 0], [0, 2]])
    # A non-square target: (height, width) in that order, and the logits (not labels) are interpolated.
    logits = np.stack([np.zeros((2, 2)), np.array([[2.0, -2.0], [2.0, -2.0]]), np.full((2, 2), -1.0)])
    out = native_labels(logits.astype(np.float32), 3, 8)
    assert out.shape == (3, 8) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.tile([1, 1, 1, 1, 0, 0, 0, 0], (3, 1)))  # the logit crosses 0 halfway


def test_a_multiclass_model_writes_palette_pngs_of_class_indices_at_each_photos_size(
    multiclass, photos, tmp_path, capsys
):
    checkpoint, _ = multiclass
    inputs = [photos[k] for k in PHOTOS]
    code, out, err = predict(["--weights", checkpoint, *inputs, "--out", tmp_path, "--precision", "fp32"], capsys)
    assert code == 0, err
    assert "argmax over 3 classes, tta none (default; no" in out and "threshold" not in out
    flat = [v for colour in CLASSES.palette for v in colour]
    seen = set()
    for source in inputs:
        photo = read_image(source)
        labels, palette = read_labels(tmp_path / f"{source.stem}_mask.png")
        assert labels.shape == (photo.height, photo.width)
        assert palette[: len(flat)] == flat
        seen |= set(np.unique(labels).tolist())
        with Image.open(tmp_path / f"{source.stem}_overlay.png") as overlay:
            assert overlay.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(overlay), palette_overlay(np.asarray(photo), labels, CLASSES))
    assert seen == {0, 1, 2}  # every class is predicted somewhere, so the indices are not trivially all 0

    # The mask is the argmax of the logits upsampled bilinearly to the photo, not an upsampled label map.
    photo = read_image(photos["jpeg"])
    model = build_model("unet", 3, base_channels=4).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    x = model_input(torch.from_numpy(np.array(resize_image(photo, SIZE))).permute(2, 0, 1)[None])
    with torch.inference_mode():
        logits = F.interpolate(model(x), size=(photo.height, photo.width), mode="bilinear", align_corners=False)
    expected = logits[0].argmax(0).numpy()
    labels, _ = read_labels(tmp_path / f"{photos['jpeg'].stem}_mask.png")
    assert (labels == expected).mean() >= 0.999  # float rounding may flip a pixel where two logits tie


def test_the_onnx_export_of_a_multiclass_model_gives_the_same_masks(multiclass, photos, tmp_path, capsys):
    inputs = [photos[k] for k in PHOTOS]
    for weights, out in zip(multiclass, ("pt", "onnx"), strict=True):
        code, stdout, err = predict(
            ["--weights", weights, *inputs, "--out", tmp_path / out, "--precision", "fp32"], capsys
        )
        assert code == 0, err
        assert "argmax over 3 classes" in stdout  # the classes came from the ONNX metadata too
    for source in inputs:
        a, palette_a = read_labels(tmp_path / "pt" / f"{source.stem}_mask.png")
        b, palette_b = read_labels(tmp_path / "onnx" / f"{source.stem}_mask.png")
        assert a.shape == b.shape and palette_a == palette_b
        assert (a == b).mean() >= 0.999


@pytest.mark.parametrize("onnx", [False, True])
def test_threshold_is_refused_for_a_multiclass_model_before_writing(onnx, multiclass, photos, tmp_path, capsys):
    weights = multiclass[onnx]
    code, _, err = predict(
        ["--weights", weights, photos["jpeg"], "--out", tmp_path / "o", "--threshold", "0.3"], capsys
    )
    assert code == 1
    assert error_lines(err) == err.strip().splitlines() and len(error_lines(err)) == 1
    assert err.startswith(f"error: --threshold: {weights} is a 3-class model (background, pet, boundary)")
    assert "drop --threshold" in err
    assert not (tmp_path / "o").exists()


def test_a_multiclass_model_takes_the_tta_of_its_eval_record(multiclass, photos, tmp_path, capsys):
    weights = tmp_path / "w" / "unet.pt"
    weights.parent.mkdir()
    weights.write_bytes(multiclass[0].read_bytes())
    record = weights.parent / "unet.eval.json"
    record.write_text(json.dumps({"model": "unet", "image_size": SIZE, "threshold": 0.5, "tta": "hflip"}))
    code, out, err = predict(["--weights", weights, photos["jpeg"], "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert f"argmax over 3 classes, tta hflip ({record})" in out
