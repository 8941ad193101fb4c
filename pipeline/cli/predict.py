"""`petseg predict`: masks and overlays for any photos, with a trained checkpoint or ONNX export.

Each photo goes through the training cache's preprocessing (RGB, bilinear resize to the model's
square ``image_size``), the logits are resized back bilinearly to the photo's own size, and two PNGs
are written per photo. A binary model's logit is thresholded: ``<stem>_mask.png`` is mode L, 0
background / 255 pet, and ``<stem>_overlay.png`` the photo with the pet tinted. A multi-class model's
pixel is the class of its highest logit: ``<stem>_mask.png`` is a palette PNG (mode P) of class indices
coloured by the task's palette, and the overlay tints each class but the background in its colour.
"""

import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline.cli.options import DEFAULT_BATCH_SIZE, DEFAULT_TTA, IMAGE_EXTENSIONS
from pipeline.core.constants import DEFAULT_THRESHOLD
from pipeline.core.device import choose_device, choose_precision, probe
from pipeline.core.errors import UserError, first_line
from pipeline.core.io import atomic_path
from pipeline.core.messages import hide_bar, plural
from pipeline.data.classes import BINARY_PETS, Classes
from pipeline.data.decode import resize_image
from pipeline.evaluate.inference import LoadedModel, load_model, native_labels, predict_logits
from pipeline.evaluate.record import eval_record_path, read_eval_record
from pipeline.report.overlays import palette_overlay

MASK_SUFFIX, OVERLAY_SUFFIX = "_mask.png", "_overlay.png"


@dataclass(frozen=True)
class Problem:
    """An input that yields no prediction: its ``path`` and a message ``"<what>; <fix>"``."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Settings:
    """The ``threshold`` (probability in (0, 1); None for a multi-class model: a pixel takes its highest
    logit's class) and ``tta`` mode a run uses, and ``note``: one line saying where each came from."""

    threshold: float | None
    tta: str
    note: str


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand the command line's INPUTs into image files.

    A file is taken whatever its extension (it is decoded by content later). A folder contributes its
    files whose extension is in :data:`~pipeline.cli.options.IMAGE_EXTENSIONS` (case-insensitive),
    non-recursive, sorted by name. A path given twice (or a file also found through its folder) counts
    once. Returns the files in order and a :class:`Problem` for each INPUT that is missing or a folder
    without images.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                problems.append(
                    Problem(path, f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in this folder; pass another folder")
                )
        elif path.exists():
            found = [path]
        else:
            problems.append(Problem(path, "not found; check the path"))
            continue
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files, problems


def output_paths(out: Path, image: Path) -> tuple[Path, Path]:
    """The mask and overlay paths written for ``image`` in folder ``out``."""
    return out / f"{image.stem}{MASK_SUFFIX}", out / f"{image.stem}{OVERLAY_SUFFIX}"


def check_outputs(files: Sequence[Path], out: Path) -> None:
    """Refuse a run that would overwrite its own outputs or inputs.

    Raises UserError (naming the first clash) if two ``files`` share a stem (compared case-insensitively,
    as a case-insensitive file system would), or if an output path in ``out`` is one of the ``files``.
    """
    by_stem: dict[str, Path] = {}
    for file in files:
        other = by_stem.setdefault(file.stem.casefold(), file)
        if other is not file:
            raise UserError(
                f"{other} and {file}: both would be written as {output_paths(out, file)[0].name}; "
                "rename one or predict them in separate runs with different --out folders"
            )
    inputs = {file.resolve() for file in files}
    for file in files:
        for target in output_paths(out, file):
            if target.resolve() in inputs:
                raise UserError(f"{target}: is an input and would be overwritten by a prediction; choose another --out")


def read_image(path: Path) -> Image.Image:
    """Decode ``path`` as an RGB image at its own size, as the training cache does.

    The format comes from the content, not the extension (the official set has PNGs and GIFs named
    .jpg); RGBA, palette and greyscale images are converted to RGB, and a GIF gives its first frame.
    Raises UserError (message ``"<path>: <what>; <fix>"``) for a missing, unreadable or undecodable file.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() decodes fully, so a truncated file fails here
    except FileNotFoundError:
        raise UserError(f"{path}: not found; check the path") from None
    except Image.DecompressionBombError as err:
        raise UserError(f"{path}: {err}; downscale the image") from None
    # PIL reports corrupt data as OSError, SyntaxError or ValueError depending on the decoder.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        detail = first_line(err)
        raise UserError(f"{path}: cannot decode as an image ({detail}); replace or remove the file") from None


def resolve_settings(weights: Path, model: LoadedModel, threshold: float | None, tta: str | None) -> Settings:
    """The threshold and tta for a run: the explicit ``threshold`` / ``tta`` if given (not None), else
    those of the weights' evaluate record (:func:`eval_record_path`) when it is for the same model
    (name and image size), else 0.5 and "none".

    A multi-class model has no threshold: an explicit ``threshold`` raises UserError (one line naming
    the classes), and the record gives only its tta. The record is not read when both are given.
    Raises UserError for a malformed record.
    """
    classes = model.classes
    if not classes.binary and threshold is not None:
        raise UserError(
            f"--threshold: {weights} is a {classes.count}-class model ({', '.join(classes.names)}): each pixel "
            "takes its highest-scoring class, so there is no threshold; drop --threshold"
        )
    # A multi-class model: the default stands in for the threshold, so the record is read for its tta alone.
    threshold = threshold if classes.binary else DEFAULT_THRESHOLD
    record_path = eval_record_path(weights)
    record = None if threshold is not None and tta is not None else read_eval_record(record_path)
    if record is None:
        source = f"default; no {record_path}"
    elif record["model"] != model.name or record["image_size"] not in (None, model.image_size):
        source = f"default; {record_path} is for {record['model']} at {record['image_size']} px, not these weights"
        record = None
    else:
        source = str(record_path)
    threshold_from = source if threshold is None else "--threshold"
    tta_from = source if tta is None else "--tta"
    if threshold is None:
        threshold = record["threshold"] if record else DEFAULT_THRESHOLD
    if tta is None:
        tta = record["tta"] if record else DEFAULT_TTA
    if not classes.binary:
        return Settings(None, tta, f"argmax over {classes.count} classes, tta {tta} ({tta_from})")
    if threshold_from == tta_from:
        note = f"threshold {threshold:g}, tta {tta} ({tta_from})"
    else:
        note = f"threshold {threshold:g} ({threshold_from}), tta {tta} ({tta_from})"
    return Settings(float(threshold), tta, note)


def predict_masks(model: LoadedModel, images: Sequence[Image.Image], settings: Settings) -> list[np.ndarray]:
    """Label maps for RGB photos of any sizes, each uint8 (H, W) at its photo's own size, the photos run as one
    batch at the model's ``image_size`` (:func:`~pipeline.evaluate.inference.native_labels`, as the evaluate
    stage labels them): a binary model's class 1 where sigmoid > ``settings.threshold``, a multi-class
    model's highest logit's class."""
    small = np.stack([resize_image(image, model.image_size) for image in images])
    logits, _ = predict_logits(model.forward, small, len(small), settings.tta)
    return [
        native_labels(lg, image.height, image.width, settings.threshold)
        for lg, image in zip(logits, images, strict=True)
    ]


def write_outputs(
    out: Path, source: Path, image: Image.Image, mask: np.ndarray, classes: Classes = BINARY_PETS
) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` (RGB ``image``, W x H, the mask drawn on it) into
    ``out``, each atomically; return their paths. ``mask`` is a label map uint8 (H, W); the overlay tints each
    class but the first in its ``classes.palette`` colour. Binary ``classes``: a mode L mask of 0 and 255 (the
    pet). Otherwise a mode P mask of the class indices 0..C-1 with the palette (a viewer shows the class
    colours, a reader gets the indices).
    Raises UserError if a file cannot be written."""
    mask_path, overlay_path = output_paths(out, source)
    overlay = palette_overlay(np.asarray(image), mask, classes.palette)
    mask_png = Image.fromarray(mask * 255 if classes.binary else mask, "L")
    if not classes.binary:
        mask_png.putpalette([value for colour in classes.palette for value in colour])  # L → P, indices kept
    try:
        for path, picture in ((mask_path, mask_png), (overlay_path, Image.fromarray(overlay))):
            with atomic_path(path) as tmp:
                picture.save(tmp, format="PNG")  # tmp's name ends in .tmp-<pid>: PIL cannot infer PNG from it
    except OSError as err:
        raise UserError(f"{out}: cannot write predictions ({err}); check the folder and free space") from None
    return mask_path, overlay_path


def _decoded(files: Iterable[Path], report: list[Problem], bar: tqdm) -> Iterator[tuple[Path, Image.Image]]:
    # A photo that fails to decode is reported at once and skipped; the bar still counts it.
    for file in files:
        try:
            yield file, read_image(file)
        except UserError as err:
            report.append(Problem(file, str(err).removeprefix(f"{file}: ")))
            tqdm.write(f"error: {err}", file=sys.stderr)
            bar.update(1)


def _batches(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def run(
    inputs: Sequence[str | Path],
    weights: str | Path,
    out: str | Path,
    threshold: float | None = None,
    tta: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> list[Problem]:
    """Predict a mask and an overlay for every image in ``inputs`` (files or folders) into folder ``out``.

    ``weights``: a petseg checkpoint (.pt) or ONNX export (.onnx); a checkpoint runs on ``device`` at
    ``precision`` (:func:`pipeline.core.device.choose_precision`), an export in fp32. ``threshold``
    (probability, strictly between 0 and 1; refused for a multi-class model) and ``tta``
    (:data:`~pipeline.evaluate.inference.TTA_MODES`) default to the weights' evaluate record, else 0.5
    and "none" (:func:`resolve_settings`); one info line on stdout says which. Photos are decoded
    ``batch_size`` at a time, so memory does not grow with the number of inputs. Each input that cannot
    be used (missing, not an image, a folder without images) is reported at once on stderr as
    ``error: <path>: <what>; <fix>`` and skipped.

    Returns those problems (empty when every input was written). Raises UserError, before writing
    anything, for weights that are not a petseg model, a malformed evaluate record, two inputs with
    the same stem, an output that would overwrite an input, ``--out`` not a folder, an unavailable
    device; and while writing, for a file that cannot be written. ``threshold``, ``tta`` and
    ``batch_size`` are taken as valid: :func:`pipeline.cli.main.build_parser` checks them.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    files, problems = collect_inputs(inputs)
    check_outputs(files, out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        return problems
    n_missing = len(problems)
    where = choose_device(device, "--device").value
    model = load_model(Path(weights), where, choose_precision(precision, probe(where)).value)
    settings = resolve_settings(Path(weights), model, threshold, tta)
    count = f"{len(files)} {plural(len(files), 'image')}"
    print(f"predict: {model.name} at {model.image_size} px, {settings.note}, {count} into {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the output folder ({err}); choose another --out") from None
    with tqdm(total=len(files), desc="predict", unit="img", disable=hide_bar(progress)) as bar:
        for batch in _batches(_decoded(files, problems, bar), batch_size):
            masks = predict_masks(model, [image for _, image in batch], settings)
            for (file, image), mask in zip(batch, masks, strict=True):
                write_outputs(out, file, image, mask, model.classes)
                bar.update(1)
    unreadable = len(problems) - n_missing
    print(f"predict: wrote {len(files) - unreadable} of {count} to {out}")
    return problems
