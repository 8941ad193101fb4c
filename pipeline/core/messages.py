"""Wording of what the stages print: one-line messages for params that break the schema
(pipeline/core/params.py), with the nearest valid key; counts of things ("1 image", "2 images");
and where progress bars are drawn."""

import difflib
from typing import Any

from pydantic import BaseModel


def describe(error: dict[str, Any], root: type[BaseModel]) -> str:
    """One line for one pydantic error of a params file validated against ``root``: the dotted key,
    what is wrong, the value given, and for an unknown key the nearest valid one."""
    raw = error["loc"]
    loc = [str(part) for part in raw if not isinstance(part, int)]  # ints index into lists
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        return f"unknown key {key}" + _hint(loc, root)
    if error["type"] == "missing" and not (raw and isinstance(raw[-1], int)):
        return f"missing key {key}; see the shipped params.yaml and docs/training.md for every key"
    if error["type"] in ("model_type", "dict_type"):
        return f"{key} must be a section (a mapping), got {error['input']!r}"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    message = message[0].lower() + message[1:]
    if error["type"] == "missing":  # an item missing from a fixed-length list
        message = "has too few items"
    if isinstance(error["input"], dict):  # a check across a section's keys: its message names them
        return f"{key}: {message}" if key else message
    return f"{key}: {message}, got {error['input']!r}"


def _hint(loc: list[str], root: type[BaseModel]) -> str:
    parent, key = loc[:-1], loc[-1]
    if not parent:  # a section's key written at the top level, e.g. `threshold: 0.4`: its exact name wins
        for name, field in root.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                if key in field.annotation.model_fields:
                    return f"; did you mean {name}.{key}?"
    found = nearest_key(key, _keys_of(parent, root))
    return f"; did you mean {'.'.join(parent + [found])}?" if found else ""


def _keys_of(path: list[str], root: type[BaseModel]) -> list[str]:
    model = root
    for part in path:
        model = model.model_fields[part].annotation
    return list(model.model_fields)


def nearest_key(key: str, valid: list[str]) -> str | None:
    """The valid key ``key`` was most likely meant to be, or None.

    An abbreviation made of the words' initials wins (``learning_rate`` → ``lr``); otherwise the
    closest spelling by difflib's ratio, if at least 0.6 (``treshold`` → ``threshold``).
    """
    initials = "".join(word[0] for word in key.split("_") if word)
    if len(initials) > 1 and initials in valid:
        return initials
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def plural(count: int, noun: str) -> str:
    """``noun`` for ``count`` things: as is for 1, else with "s" (or "es" after s, x, ch, sh): "1 image",
    "0 images", "2 processes"."""
    if count == 1:
        return noun
    return f"{noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{noun}s"


def hide_bar(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a bar wanted when ``progress``: None lets tqdm draw it on a terminal only,
    so a log (CI, `dvc repro > log 2>&1`) gets no bar for a later message to be glued onto."""
    return None if progress else True
