"""`petseg params`: every params.yaml key in words from the schema, and docs/training.md's table kept its output."""

from typing import Annotated

import pytest
from pydantic import Field

from pipeline.cli.main import main
from pipeline.cli.params_table import Row, render_markdown, render_text, rows
from pipeline.core.param_types import Count, Fraction, Section
from tests.support import REPO, shipped_params

BEGIN, END = "<!-- BEGIN params table", "<!-- END params table -->"


def docs_table() -> str:
    """The text between docs/training.md's params-table markers: the lines after BEGIN's, up to END,
    without the blank line on either side (Markdown needs them to end the comment and the table)."""
    text = (REPO / "docs" / "training.md").read_text()
    begin = text.index(BEGIN)
    return text[text.index("\n", begin) + 1 : text.index(END)].removeprefix("\n").removesuffix("\n")


def dotted(params: dict, prefix: str = "") -> set[str]:
    """The leaf keys of a params mapping, dotted: {"lr", "data.source", ...}."""
    keys = set()
    for name, value in params.items():
        keys |= dotted(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name}
    return keys


def test_the_docs_table_is_the_output_of_petseg_params_markdown(capsys):
    assert main(["params", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert printed == render_markdown(rows())
    assert docs_table() == printed, (
        "docs/training.md's params table is out of date with the schema: run `petseg params --markdown` and "
        "put its output between the markers"
    )


def test_every_key_of_the_shipped_params_has_one_row_and_overrides_one_per_model():
    keys = [row.key for row in rows()]
    assert len(keys) == len(set(keys))
    assert dotted(shipped_params()) <= set(keys), sorted(dotted(shipped_params()) - set(keys))
    # A row per key the schema knows that params.yaml may leave out; a model's overrides are one row.
    assert {"momentum", "augmentation.vflip", "train.nproc", "split.test_fraction"} <= set(keys)
    assert {"unet.<training key>", "resnet34_unet.<training key>"} <= set(keys)
    assert "unet.lr" not in keys and "resnet34_unet.epochs" not in keys


@pytest.mark.parametrize(
    ("key", "allowed", "default"),
    [
        ("lr", "number > 0", "required"),
        ("epochs", "whole number >= 1", "required"),
        ("momentum", "number from 0 to 1", "`0.9`"),
        ("optimizer", "adamw or sgd", "`adamw`"),
        ("compile", "auto, true or false", "`false`"),
        ("data.url", "text", "required"),
        ("num_workers", "auto or a whole number >= 0", "`auto`"),
        ("evaluate.threshold", "a number strictly between 0 and 1, or auto", "required"),
        ("image_size", "a multiple of 32, >= 32", "required"),
        ("augmentation.crop_scale", "[lo, hi], 0 < lo <= hi <= 1", "`[0.5, 1]`"),
        ("augmentation.degrees", "number from 0 to 180", "`0`"),
        ("resnet34_unet.decoder_channels", "5 items, each a whole number >= 1", "required"),
        ("data.max_bad_fraction", "number from 0 to 1", "`0.01`"),
    ],
)
def test_rows_give_the_values_and_default_of_each_key(key, allowed, default):
    row = {row.key: row for row in rows()}[key]
    assert (row.allowed, row.default) == (allowed, default)
    assert row.description


def test_the_text_form_puts_each_description_under_its_key(capsys):
    assert main(["params"]) == 0
    printed = capsys.readouterr().out
    assert printed == render_text(rows())
    assert "lr (number > 0; default: required)\n    the peak learning rate of the schedule\n" in printed
    assert all(len(line) <= 100 for line in printed.splitlines() if line.startswith("    "))


def test_markdown_escapes_the_column_separator():
    table = render_markdown([Row("k", "a | b", "`1`", "x|y")])
    assert table.splitlines()[-1] == r"| `k` | a \| b | `1` | x\|y |"


def test_a_key_without_a_description_is_refused():
    class Undescribed(Section):
        size: Count = 1

    with pytest.raises(ValueError, match=r"^size: no description; give it Field\(description=...\)"):
        rows(Undescribed)


def test_a_type_without_words_is_refused():
    class Pair(Section):
        pair: tuple[int, int] = Field((1, 2), description="two numbers")

    with pytest.raises(ValueError, match=r"^inner\.pair: cannot put its type .* allowed\(...\)"):
        rows(Pair, "inner.")


def test_a_sections_rows_follow_the_own_keys_of_its_parent():
    class Inner(Section):
        share: Fraction = Field(0.5, description="a share")

    class Outer(Section):
        inner: Inner
        sizes: Annotated[list[Count], Field(min_length=2, max_length=2)] = Field(description="two sizes")

    assert rows(Outer) == [
        Row("sizes", "2 items, each a whole number >= 1", "required", "two sizes"),
        Row("inner.share", "number from 0 to 1", "`0.5`", "a share"),
    ]
