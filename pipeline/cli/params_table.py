"""`petseg params`: every params.yaml key, the values it takes, its default and what it does, read from
the schema (:mod:`pipeline.core.param_schema`), as text or as the Markdown table docs/training.md holds.

The values come from each field's type and bounds, or from its ``allowed`` words
(:func:`pipeline.core.param_types.allowed`) where a function checks it; the description is the
field's ``Field(description=...)``, so each key is described in the schema alone.
"""

import textwrap
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.core.param_schema import Params
from pipeline.core.param_training import TrainOverrides
from pipeline.core.param_types import Section

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


@dataclass(frozen=True)
class Row:
    """One key: its dotted name, the values it takes, its default (as params.yaml spells it, in
    backticks; "required" when it has none) and what it does."""

    key: str
    allowed: str
    default: str
    description: str


def rows(model: type[Section] = Params, prefix: str = "") -> list[Row]:
    """A row per key of ``model``, named below ``prefix``: its own keys in the schema's order, then
    each section's. A model section's training overrides are one row, ``<section>.<training key>``.

    Raises ValueError naming a key that has no description, or whose type this table cannot put in
    words (give it :func:`~pipeline.core.param_types.allowed`).
    """
    own, sections = [], []
    for name, info in model.model_fields.items():
        key = prefix + name
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            sections += rows(info.annotation, f"{key}.")
        elif not (issubclass(model, TrainOverrides) and name in TrainOverrides.model_fields):
            if not info.description:
                raise ValueError(f"{key}: no description; give it Field(description=...) in the schema")
            own.append(Row(key, _allowed(key, info), _default(info), info.description))
    if issubclass(model, TrainOverrides):
        own.append(
            Row(f"{prefix}<training key>", "as the top-level key", "the top-level value", TrainOverrides.__doc__)
        )
    return own + sections


def _allowed(key: str, info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "allowed" in extra:
        return str(extra["allowed"])
    return _values(key, info.annotation, info.metadata)


def _values(key: str, annotation: Any, metadata: list[Any]) -> str:
    """The values of a type in words: "adamw or sgd", "number > 0", "5 items, each a whole number >= 1".
    Raises ValueError for a type it has no words for (a union, a tuple, a list of any length)."""
    if get_origin(annotation) is Literal:
        *others, last = get_args(annotation)
        return f"{', '.join(others)} or {last}" if others else str(last)
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "text"
    if annotation in (int, float):
        noun = "whole number" if annotation is int else "number"
        bounds = {name: getattr(m, name) for m in metadata for name in _BOUNDS if hasattr(m, name)}
        if bounds.keys() == {"ge", "le"}:
            return f"{noun} from {bounds['ge']:g} to {bounds['le']:g}"
        return " ".join([noun, " and ".join(f"{_BOUNDS[name]} {value:g}" for name, value in bounds.items())]).strip()
    sizes = [getattr(m, name) for name in ("min_length", "max_length") for m in metadata if hasattr(m, name)]
    if get_origin(annotation) is list and len(sizes) == 2 and sizes[0] == sizes[1]:  # a fixed length
        item_type, item_info = get_args(get_args(annotation)[0])  # the item's Annotated[type, FieldInfo]
        return f"{sizes[0]} items, each a {_values(key, item_type, item_info.metadata)}"
    raise ValueError(f"{key}: cannot put its type {annotation} in words; give it allowed(...) in the schema")


def _default(info: FieldInfo) -> str:
    return "required" if info.default is PydanticUndefined else f"`{_yaml(info.default)}`"


def _yaml(value: Any) -> str:
    # As params.yaml spells it: true/false, null, [a, b], 0.01.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return f"[{', '.join(map(_yaml, value))}]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_markdown(table: list[Row]) -> str:
    """The rows as a Markdown table (a line per key, ``|`` escaped), ending in a newline."""

    def cell(text: str) -> str:
        return text.replace("|", r"\|")

    lines = ["| key | values | default | what it does |", "| --- | --- | --- | --- |"]
    for row in table:
        lines.append(f"| `{row.key}` | {cell(row.allowed)} | {cell(row.default)} | {cell(row.description)} |")
    return "\n".join(lines) + "\n"


def render_text(table: list[Row], width: int = 100) -> str:
    """The rows for a terminal: per key a line ``key (values; default: D)`` and its description below,
    indented and wrapped at ``width`` characters; ends in a newline."""
    blocks = []
    for row in table:
        what = textwrap.fill(row.description, width, initial_indent="    ", subsequent_indent="    ")
        blocks.append(f"{row.key} ({row.allowed}; default: {row.default})\n{what}")
    return "\n".join(blocks) + "\n"
