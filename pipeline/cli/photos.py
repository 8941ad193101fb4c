"""`petseg predict`'s inputs: the photos its INPUTs name (files, and the images of folders), decoded
as the training cache decodes them, and the :class:`Problem` of an input that yields no prediction."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.cli.options import IMAGE_EXTENSIONS
from pipeline.core.errors import UserError, first_line
from pipeline.data.decode import SIXTEEN_BIT_MODES, to_8bit


@dataclass(frozen=True)
class Problem:
    """An input that yields no prediction: its ``path`` and a message ``"<what>; <fix>"``."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


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


def read_image(path: Path) -> Image.Image:
    """Decode ``path`` as an RGB image at its own size, as the training cache does.

    The format comes from the content, not the extension (the official set has PNGs and GIFs named
    .jpg); RGBA, palette and greyscale images are converted to RGB, a 16-bit one as the cache converts it
    (:func:`pipeline.data.decode.to_8bit`), and a GIF gives its first frame.
    Raises UserError (message ``"<path>: <what>; <fix>"``) for a missing, unreadable or undecodable file.
    """
    try:
        with Image.open(path) as img:
            # 16-bit photos by the cache's rule (the high byte), not PIL's clipping; convert() decodes fully,
            # so a truncated file fails here.
            return (to_8bit(img) if img.mode in SIXTEEN_BIT_MODES else img).convert("RGB")
    except FileNotFoundError:
        raise UserError(f"{path}: not found; check the path") from None
    except Image.DecompressionBombError as err:
        raise UserError(f"{path}: {err}; downscale the image") from None
    # PIL reports corrupt data as OSError, SyntaxError or ValueError depending on the decoder.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        detail = first_line(err)
        raise UserError(f"{path}: cannot decode as an image ({detail}); replace or remove the file") from None
