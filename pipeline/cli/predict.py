"""`petseg predict`: masks and overlays for any photos, with a trained checkpoint or ONNX export.

Each photo goes through the training cache's preprocessing (RGB, bilinear resize to the model's
square ``image_size``), the logits are resized back bilinearly to the photo's own size, and two PNGs
are written per photo. A binary model's logit is thresholded: ``<stem>_mask.png`` is mode L, 0
background / 255 pet, and ``<stem>_overlay.png`` the photo with the pet tinted. A multi-class model's
pixel is the class of its highest logit: ``<stem>_mask.png`` is a palette PNG (mode P) of class indices
coloured by the task's palette, and the overlay tints each class but the background in its colour.

This module runs those steps in batches; finding and decoding the photos is :mod:`pipeline.cli.photos`,
the model's masks :mod:`pipeline.cli.segment`, and the files written :mod:`pipeline.cli.outputs`.
"""

import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from pipeline.cli.options import DEFAULT_BATCH_SIZE
from pipeline.cli.outputs import check_outputs, write_outputs
from pipeline.cli.photos import Problem, collect_inputs, read_image
from pipeline.cli.segment import predict_masks, resolve_settings
from pipeline.core.device import choose_device, choose_precision, probe
from pipeline.core.errors import UserError
from pipeline.core.messages import hide_bar, plural
from pipeline.data.geometry import describe
from pipeline.evaluate.inference import load_model


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
    (:data:`~pipeline.core.constants.TTA_MODES`) default to the weights' evaluate record, else 0.5
    and "none" (:func:`~pipeline.cli.segment.resolve_settings`); one info line on stdout says which.
    Photos are decoded ``batch_size`` at a time, so memory does not grow with the number of inputs.
    Each input that cannot be used (missing, not an image, a folder without images) is reported at
    once on stderr as ``error: <path>: <what>; <fix>`` and skipped.

    Returns those problems (empty when every input was written). Raises UserError, before writing
    anything, for weights that are not a petseg model, a malformed evaluate record, two inputs with
    the same stem, an output that would overwrite an input, ``--out`` not a folder, an unavailable
    device; and while writing, for a file that cannot be written. ``threshold``, ``tta`` and
    ``batch_size`` are taken as valid: :func:`pipeline.cli.main.build_parser` checks them.
    """
    out = Path(out)
    files, problems = _inputs(inputs, out)
    if not files:
        return problems
    n_missing = len(problems)
    where = choose_device(device, "--device").value
    model = load_model(Path(weights), where, choose_precision(precision, probe(where)).value)
    settings = resolve_settings(Path(weights), model, threshold, tta)
    count = f"{len(files)} {plural(len(files), 'image')}"
    print(f"predict: {model.name}, photos {describe(model.resize)}, {settings.note}, {count} into {out}")
    _make_folder(out)
    with tqdm(total=len(files), desc="predict", unit="img", disable=hide_bar(progress)) as bar:
        for batch in _batches(_decoded(files, problems, bar), batch_size):
            masks = predict_masks(model, [image for _, image in batch], settings)
            for (file, image), mask in zip(batch, masks, strict=True):
                write_outputs(out, file, image, mask, model.classes)
                bar.update(1)
    print(f"predict: wrote {len(files) - (len(problems) - n_missing)} of {count} to {out}")
    return problems


def _inputs(inputs: Sequence[str | Path], out: Path) -> tuple[list[Path], list[Problem]]:
    # Everything that can be refused without the model is refused first, each problem printed at once.
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    files, problems = collect_inputs(inputs)
    check_outputs(files, out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return files, problems


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the output folder ({err}); choose another --out") from None


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
