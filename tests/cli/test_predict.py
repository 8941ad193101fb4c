"""`petseg predict`: image formats, folders, per-input errors, weights, eval-record defaults, ONNX, entry points."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline.cli.predict
from pipeline.cli.main import main
from pipeline.cli.photos import read_image
from pipeline.data.classes import BINARY_PETS, classes_to_json
from pipeline.data.colour import model_input
from pipeline.data.decode import load_pair, resize_image, resize_pair
from pipeline.data.layout import image_path
from pipeline.data.split import make_split
from pipeline.evaluate.export import export_checked
from pipeline.evaluate.inference import onnx_providers
from pipeline.models.registry import build_model
from pipeline.train.losses import bce_dice_loss
from tests.support import square

SIZE = 32


def scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey background with an orange rectangle (the "pet"): image uint8 (h, w, 3), mask uint8 (h, w)."""
    image = np.clip(rng.normal(rng.uniform(60, 160), 25, (h, w, 3)), 0, 255)
    mask = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    y1, x1 = y0 + rng.integers(h // 4, h // 2 + 1), x0 + rng.integers(w // 4, w // 2 + 1)
    mask[y0:y1, x0:x1] = 1
    image[mask == 1] = np.clip(rng.normal((235, 150, 20), 15, (int(mask.sum()), 3)), 0, 255)
    return image.astype(np.uint8), mask


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is ~10x faster than several contending for a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A 4-channel UNet trained for 40 steps on :func:`scene` at 32 px, saved as a petseg checkpoint unet.pt."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("unet", base_channels=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(40):
        images, masks = zip(*(scene(rng, SIZE, SIZE) for _ in range(4)), strict=True)
        x = model_input(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
        loss = bce_dice_loss(model(x), torch.from_numpy(np.stack(masks)).float()[:, None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    root = tmp_path_factory.mktemp("weights")
    ckpt = {
        "model": "unet",
        "arch": {"base_channels": 4},
        "out_channels": 1,
        "classes": classes_to_json(BINARY_PETS),
        "state_dict": model.state_dict(),
        "epoch": 1,
        "valid_dice": 0.5,
        "image_size": SIZE,
        "resize": square(SIZE),
    }
    torch.save(ckpt, root / "unet.pt")
    return root


@pytest.fixture(scope="module")
def onnx_weights(model_dir, tmp_path_factory) -> Path:
    """The checkpoint exported to ONNX (opset 18), in a folder of its own (no eval record)."""
    model = build_model("unet", base_channels=4)
    model.load_state_dict(torch.load(model_dir / "unet.pt", weights_only=True)["state_dict"])
    rng = np.random.default_rng(1)
    images = np.stack([scene(rng, SIZE, SIZE)[0] for _ in range(2)])
    x = model_input(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    path = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    meta = {
        "model": "unet",
        "image_size": str(SIZE),
        "resize": json.dumps(square(SIZE)),
        "classes": json.dumps(classes_to_json(BINARY_PETS)),
    }
    export_checked(model.eval(), path, meta, x, opset=18, tolerance=1e-3)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Photos in the dataset's formats and odd sizes, and a folder of two more (plus a non-image file)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2)
    paths = {}

    def image(h, w):
        return Image.fromarray(scene(rng, h, w)[0])

    paths["jpeg"] = root / "dog.jpg"
    image(41, 57).save(paths["jpeg"], quality=90)
    rgba = image(64, 48).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((64, 48), 200, np.uint8)))
    paths["rgba"] = root / "rgba.png"
    rgba.save(paths["rgba"])
    paths["grey"] = root / "grey.png"
    image(30, 70).convert("L").save(paths["grey"])
    paths["palette"] = root / "palette.png"
    image(50, 50).convert("P", palette=Image.Palette.ADAPTIVE).save(paths["palette"])
    # A GIF named .jpg, as in the official set, with two frames: only the first is predicted.
    paths["gif"] = root / "gif_named.jpg"
    frames = [image(36, 44).convert("P", palette=Image.Palette.ADAPTIVE) for _ in range(2)]
    frames[0].save(paths["gif"], format="GIF", save_all=True, append_images=frames[1:])
    folder = root / "folder"
    folder.mkdir()
    image(40, 40).save(folder / "b.PNG")
    image(33, 29).save(folder / "a.JPEG", quality=90)
    (folder / "notes.txt").write_text("not an image")
    paths["folder"] = folder
    paths["corrupt"] = root / "corrupt.jpg"
    paths["corrupt"].write_bytes(bytes(range(256)) * 4)
    return paths


def predict(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``petseg predict`` in-process; return the exit status, stdout and stderr."""
    code = main(["predict", *[str(a) for a in argv]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    # tqdm redraws with \r, which splitlines() also splits on.
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img)


def test_formats_folders_and_bad_inputs(model_dir, photos, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    good = [photos[k] for k in ("jpeg", "rgba", "grey", "palette", "gif")]
    folder_files = [photos["folder"] / "a.JPEG", photos["folder"] / "b.PNG"]
    args = [*good, photos["corrupt"], photos["folder"], missing]
    code, out, err = predict(
        ["--weights", model_dir / "unet.pt", *args, "--out", tmp_path / "out", "--batch-size", 2], capsys
    )
    assert code == 1
    assert "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 2
    assert any(str(photos["corrupt"]) in line and "cannot decode" in line for line in errors)
    assert any(str(missing) in line and "not found" in line for line in errors)
    assert "wrote 7 of 8 images" in out
    values = set()
    for source in good + folder_files:
        with Image.open(source) as img:
            size = img.size
        mask = read_mask(tmp_path / "out" / f"{source.stem}_mask.png")
        assert mask.shape == (size[1], size[0])
        values |= set(np.unique(mask).tolist())
        with Image.open(tmp_path / "out" / f"{source.stem}_overlay.png") as overlay:
            assert (overlay.mode, overlay.size) == ("RGB", size)
    assert values == {0, 255}  # the tiny model finds pet and background, so thresholds matter below
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 14 and not any(name.startswith(("corrupt", "notes", ".")) for name in written)


def test_all_good_inputs_exit_0(model_dir, photos, tmp_path, capsys):
    code, out, err = predict(["--weights", model_dir / "unet.pt", photos["folder"], "--out", tmp_path], capsys)
    assert code == 0, err
    assert error_lines(err) == []
    assert "threshold 0.5, tta none (default; no" in out


def test_photos_are_decoded_per_batch(model_dir, photos, tmp_path, capsys, monkeypatch):
    events = []
    read, write = pipeline.cli.predict.read_image, pipeline.cli.predict.write_outputs
    monkeypatch.setattr(pipeline.cli.predict, "read_image", lambda path: events.append("read") or read(path))
    monkeypatch.setattr(pipeline.cli.predict, "write_outputs", lambda *a: events.append("write") or write(*a))
    inputs = [photos[k] for k in ("jpeg", "rgba", "grey", "palette", "gif")]
    code, _, err = predict(["--weights", model_dir / "unet.pt", *inputs, "--out", tmp_path, "--batch-size", 2], capsys)
    assert code == 0, err
    assert events == ["read", "read", "write", "write"] * 2 + ["read", "write"]


@pytest.mark.parametrize("name", ["junk.pt", "junk.onnx", "absent.pt"])
def test_weights_that_are_not_a_checkpoint(name, photos, tmp_path, capsys):
    weights = tmp_path / name
    if name.startswith("junk"):
        weights.write_bytes(b"\x00not a model\n" * 50)
    code, _, err = predict(["--weights", weights, photos["jpeg"], "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {weights}")
    assert not (tmp_path / "out").exists()


def test_onnx_gives_the_same_masks(model_dir, onnx_weights, photos, tmp_path, capsys):
    inputs = [photos[k] for k in ("jpeg", "rgba", "grey", "palette", "gif")]
    # fp32 for both: ONNX Runtime runs fp32, and a bf16 autocast moves a few boundary pixels.
    for weights, out in ((model_dir / "unet.pt", "pt"), (onnx_weights, "onnx")):
        code, _, err = predict(["--weights", weights, *inputs, "--out", tmp_path / out, "--precision", "fp32"], capsys)
        assert code == 0, err
    for source in inputs:
        a = read_mask(tmp_path / "pt" / f"{source.stem}_mask.png")
        b = read_mask(tmp_path / "onnx" / f"{source.stem}_mask.png")
        assert a.shape == b.shape
        assert (a == b).mean() >= 0.999
        with Image.open(tmp_path / "pt" / f"{source.stem}_overlay.png") as x:
            with Image.open(tmp_path / "onnx" / f"{source.stem}_overlay.png") as y:
                assert x.size == y.size


def test_eval_record_sets_the_defaults_and_flags_override_it(model_dir, photos, tmp_path, capsys):
    weights = tmp_path / "w" / "unet.pt"
    weights.parent.mkdir()
    shutil.copy(model_dir / "unet.pt", weights)
    record = weights.parent / "unet.eval.json"

    def pet_pixels(out: str, *extra) -> tuple[int, str]:
        code, stdout, err = predict(["--weights", weights, photos["folder"], "--out", tmp_path / out, *extra], capsys)
        assert code == 0, err
        return sum(int(read_mask(p).astype(bool).sum()) for p in (tmp_path / out).glob("*_mask.png")), stdout

    record.write_text(json.dumps({"model": "unet", "image_size": SIZE, "threshold": 0.05, "tta": "hflip"}))
    low, stdout = pet_pixels("low")
    assert f"threshold 0.05, tta hflip ({record})" in stdout
    overridden, stdout = pet_pixels("override", "--threshold", "0.95", "--tta", "none")
    assert "threshold 0.95 (--threshold), tta none (--tta)" in stdout
    record.write_text(json.dumps({"model": "unet", "image_size": SIZE, "threshold": 0.95, "tta": "none"}))
    high, _ = pet_pixels("high")
    assert low > high
    assert overridden == high
    # A record for other weights is not applied.
    record.write_text(json.dumps({"model": "resnet34_unet", "image_size": 256, "threshold": 0.95, "tta": "hflip"}))
    _, stdout = pet_pixels("other")
    assert "threshold 0.5, tta none (default;" in stdout and "is for resnet34_unet" in stdout


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[0.5]",
        '{"threshold": 0.5, "tta": "none"}',
        '{"model": "unet", "threshold": 1.5, "tta": "none"}',
        '{"model": "unet"}',
        '{"model": "unet", "threshold": 0.5, "tta": "vflip"}',
        '{"model": "unet", "threshold": 0.5, "tta": "none", "image_size": "32"}',
    ],
)
def test_malformed_eval_record(text, model_dir, photos, tmp_path, capsys):
    shutil.copy(model_dir / "unet.pt", tmp_path / "unet.pt")
    (tmp_path / "unet.eval.json").write_text(text)
    code, _, err = predict(["--weights", tmp_path / "unet.pt", photos["jpeg"], "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert error_lines(err) == err.strip().splitlines()
    assert len(error_lines(err)) == 1 and str(tmp_path / "unet.eval.json") in err


def test_same_stem_is_refused_before_writing(model_dir, photos, tmp_path, capsys):
    other = tmp_path / "dog.png"
    Image.open(photos["jpeg"]).save(other)
    code, _, err = predict(
        ["--weights", model_dir / "unet.pt", photos["jpeg"], other, "--out", tmp_path / "out"], capsys
    )
    assert code == 1
    assert len(error_lines(err)) == 1 and "dog_mask.png" in err
    assert not (tmp_path / "out").exists()


def test_output_over_an_input_is_refused(model_dir, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat_mask.png")
    code, _, err = predict(["--weights", model_dir / "unet.pt", tmp_path, "--out", tmp_path], capsys)
    assert code == 1 and len(error_lines(err)) == 1 and "would be overwritten" in err


def test_no_images_found(model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    code, _, err = predict(["--weights", model_dir / "unet.pt", tmp_path / "empty", "--out", tmp_path / "o"], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "no image files" in err


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan", "half"])
def test_threshold_must_be_strictly_between_0_and_1(value, model_dir, photos, tmp_path, capsys):
    code, _, err = predict(
        ["--weights", model_dir / "unet.pt", photos["jpeg"], "--out", tmp_path, "--threshold", value], capsys
    )
    assert code == 2 and "--threshold" in err


def test_cuda_unavailable_is_one_line(model_dir, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = predict(
        ["--weights", model_dir / "unet.pt", photos["jpeg"], "--out", tmp_path, "--device", "cuda"], capsys
    )
    assert code == 1 and err.strip().splitlines() == [err.strip()] and "--device cuda" in err


def test_preprocessing_is_the_training_caches(synthetic_root, photos):
    stem = make_split(synthetic_root, 0.25, seed=0).test[0]
    expected = load_pair(synthetic_root, stem, SIZE, "pet")[0]
    np.testing.assert_array_equal(resize_image(read_image(image_path(synthetic_root, stem)), SIZE), expected)
    for key in ("jpeg", "rgba", "grey", "palette", "gif"):
        image = read_image(photos[key])
        assert image.mode == "RGB"
        mask = np.zeros((image.height, image.width), np.uint8)
        np.testing.assert_array_equal(resize_image(image, SIZE), resize_pair(image, mask, SIZE)[0])


@pytest.mark.slow
def test_entry_points(model_dir, photos, tmp_path):
    """`python -m pipeline predict` and the installed `petseg` script (run side by side, each pays for torch)."""
    petseg = Path(sys.executable).parent / "petseg"
    assert petseg.is_file(), "console script missing: pip install -e '.[dev]'"
    common = ["predict", "--weights", str(model_dir / "unet.pt"), str(photos["jpeg"])]
    runs = {
        "module": [sys.executable, "-m", "pipeline", *common, "--out", str(tmp_path / "module")],
        "script": [str(petseg), *common, "--out", str(tmp_path / "script")],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        k: subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, cmd in runs.items()
    }
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            assert "wrote 1 of 1 image to" in stdout
            assert (tmp_path / name / "dog_mask.png").is_file() and (tmp_path / name / "dog_overlay.png").is_file()
    finally:
        for proc in procs.values():
            proc.kill()  # a no-op for a finished process
            proc.wait()
    np.testing.assert_array_equal(
        read_mask(tmp_path / "module" / "dog_mask.png"), read_mask(tmp_path / "script" / "dog_mask.png")
    )


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_batch_size_must_be_a_whole_number_from_1(value, model_dir, photos, tmp_path, capsys):
    code, _, err = predict(
        ["--weights", model_dir / "unet.pt", photos["jpeg"], "--out", tmp_path, "--batch-size", value], capsys
    )
    assert code == 2 and "--batch-size" in err and "whole number >= 1" in err


def test_a_decompression_bomb_is_one_line_and_the_rest_are_written(model_dir, photos, tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    # PIL refuses images over 2 x MAX_IMAGE_PIXELS outright; lower the limit instead of making a huge file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    code, _, err = predict(["--weights", model_dir / "unet.pt", big, photos["grey"], "--out", tmp_path / "o"], capsys)
    assert code == 1
    assert error_lines(err) == [line for line in error_lines(err) if str(big) in line] and len(error_lines(err)) == 1
    assert "downscale the image" in err
    assert (tmp_path / "o" / f"{Path(photos['grey']).stem}_mask.png").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(model_dir, photos, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = predict(
        ["--weights", model_dir / "unet.pt", photos["jpeg"], "--out", tmp_path / "file" / "o"], capsys
    )
    assert code == 1 and len(error_lines(err)) == 1 and "cannot create the output folder" in err


def test_a_failed_write_is_one_line_and_leaves_no_partial_file(model_dir, photos, tmp_path, capsys, monkeypatch):
    def full_disk(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    code, _, err = predict(["--weights", model_dir / "unet.pt", photos["jpeg"], "--out", tmp_path / "o"], capsys)
    assert code == 1 and len(error_lines(err)) == 1 and "cannot write predictions" in err
    assert list((tmp_path / "o").iterdir()) == []


def test_ctrl_c_exits_130(model_dir, photos, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.cli.predict.run", interrupted)
    code, _, err = predict(["--weights", model_dir / "unet.pt", photos["jpeg"], "--out", tmp_path / "o"], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_onnx_runs_on_cuda_first_when_asked():
    assert onnx_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_a_16_bit_photo_is_read_as_the_cache_reads_it(tmp_path):
    values = np.array([[0, 255, 256], [32768, 65280, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # mode I;16
    photo = np.asarray(read_image(tmp_path / "deep.png"))
    assert photo.shape == (2, 3, 3) and (photo == (values >> 8).astype(np.uint8)[..., None]).all()
