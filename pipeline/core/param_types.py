"""Value types of the params schema (:mod:`pipeline.core.param_schema`): numbers, counts, flags and the
"auto"-or-value kinds, with the checks YAML needs (its ``true`` is not 1, ``3e-4`` is a number), and
the base of every section."""

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.fields import FieldInfo

from pipeline.core.constants import SIZE_MULTIPLE


def allowed(text: str) -> FieldInfo:
    """Field metadata saying in words which values a key takes, as ``petseg params`` shows them: for a
    type checked by a function (whose bounds the table cannot read) or by a check across its section."""
    return Field(json_schema_extra={"allowed": text})


def _no_bool(value: Any) -> Any:
    # YAML's `true` would otherwise pass as 1 or 1.0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


# A float param: YAML 1.1 (PyYAML) reads an exponent without a decimal point ("3e-4") as a string,
# which pydantic parses; true/false, NaN and infinities are refused.
Number = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]
NonNegative = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(ge=0, le=1)]
Count = Annotated[int, Field(strict=True, ge=1)]
CountOrZero = Annotated[int, Field(strict=True, ge=0)]
Seed = Annotated[int, Field(strict=True, ge=0)]
Flag = Annotated[bool, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1)]

# What the "auto"-or-value kinds and the class count take; each error message and `petseg params` say it.
_AUTO_OR_COUNT = "auto or a whole number >= 1"
_AUTO_OR_WORKERS = "auto or a whole number >= 0"
_AUTO_OR_FLAG = "auto, true or false"
_AUTO_OR_PROBABILITY = "a number strictly between 0 and 1, or auto"
_AUTO_OR_SIDE = f"auto or a whole number of pixels >= {SIZE_MULTIPLE}"
_WINDOW = f"0 (whole images) or a multiple of {SIZE_MULTIPLE} pixels"
_CLASS_WEIGHTS = "none, median_frequency or [w0, w1, ...], one number >= 0 per class"
_ENDPOINT = "null or host:port, a port from 1 to 65535"
_CLASS_COUNT = "0 (synthetic pets) or a number of classes from 2 to 255 (a synthetic folder dataset)"


def auto_or(check):
    """A BeforeValidator accepting "auto" or what ``check`` returns (it raises ValueError otherwise)."""
    return BeforeValidator(lambda value: value if value == "auto" else check(value))


def loader_workers(value: Any) -> int:
    """A DataLoader worker count: a whole number >= 0 (not true/false). Raises ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be {_AUTO_OR_WORKERS}")
    return value


def flag(value: Any) -> bool:
    """true or false (a YAML boolean, not a string or a number). Raises ValueError otherwise."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be {_AUTO_OR_FLAG}")


def probability(value: Any) -> float:
    """A number strictly between 0 and 1, as a float. Raises ValueError otherwise (true/false and NaN too)."""
    try:
        number = float(_no_bool(value))
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 < number < 1:  # NaN fails this too
        raise ValueError(f"must be {_AUTO_OR_PROBABILITY}")
    return number


def auto_or_count(value: Any) -> int | str:
    """ "auto" or a process count >= 1. Raises ValueError otherwise."""
    # bool is an int subclass, but `workers: yes` in YAML is a mistake, not one process.
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"must be {_AUTO_OR_COUNT}")


def side(value: Any) -> int:
    """A short side in pixels: a whole number >= 32. Raises ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= SIZE_MULTIPLE:
        return value
    raise ValueError(f"must be {_AUTO_OR_SIDE}")


def window(value: Any) -> int:
    """``evaluate.window``: 0 or a positive multiple of 32 pixels. Raises ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and value % SIZE_MULTIPLE == 0:
        return value
    raise ValueError(f"must be {_WINDOW}")


def class_weight_spec(value: Any) -> str | list[float]:
    """``class_weights``: "none", "median_frequency", or a list of at least two numbers >= 0 (as floats; not
    true/false, NaN or infinities). Raises ValueError otherwise."""
    if value in ("none", "median_frequency"):
        return value
    if isinstance(value, list) and len(value) >= 2:
        if all(isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w < math.inf for w in value):
            return [float(w) for w in value]
    raise ValueError(f"must be {_CLASS_WEIGHTS}")


def class_count(value: Any) -> int:
    """``data.synthetic_classes``: 0 (the pets, with trimaps) or a class count >= 2 (a folder dataset). Raises
    ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and (value == 0 or 2 <= value <= 255):
        return value
    raise ValueError(f"must be {_CLASS_COUNT}")


def endpoint(value: Any) -> str | None:
    """A network endpoint "host:port" (an IPv6 host in brackets: "[::1]:29400"), or None. Raises ValueError
    otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        host, _, port = value.rpartition(":")
        if host and port.isdigit() and 1 <= int(port) <= 65535:
            return value
    raise ValueError(f"must be {_ENDPOINT}")


AutoOrCount = Annotated[int | str, BeforeValidator(auto_or_count), allowed(_AUTO_OR_COUNT)]
AutoOrWorkers = Annotated[int | str, auto_or(loader_workers), allowed(_AUTO_OR_WORKERS)]
AutoOrFlag = Annotated[bool | str, auto_or(flag), allowed(_AUTO_OR_FLAG)]
AutoOrProbability = Annotated[float | str, auto_or(probability), allowed(_AUTO_OR_PROBABILITY)]
AutoOrSide = Annotated[int | str, auto_or(side), allowed(_AUTO_OR_SIDE)]
WindowSide = Annotated[int, BeforeValidator(window), allowed(_WINDOW)]
ClassWeights = Annotated[str | list[float], BeforeValidator(class_weight_spec), allowed(_CLASS_WEIGHTS)]
ClassCount = Annotated[int, BeforeValidator(class_count), allowed(_CLASS_COUNT)]
Endpoint = Annotated[str | None, BeforeValidator(endpoint), allowed(_ENDPOINT)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors; values are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
