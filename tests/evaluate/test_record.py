"""The evaluation record beside the weights: a binary model's threshold, a multi-class model's null."""

import pytest

from pipeline.core.errors import UserError
from pipeline.evaluate.record import read_eval_record, write_eval_record


def test_a_multiclass_record_has_a_null_threshold(tmp_path):
    write_eval_record(tmp_path / "m.eval.json", "unet", 64, None, "hflip")
    assert read_eval_record(tmp_path / "m.eval.json") == {
        "model": "unet", "threshold": None, "tta": "hflip", "image_size": 64,
    }  # fmt: skip
    write_eval_record(tmp_path / "b.eval.json", "unet", 64, 0.35, "none")
    assert read_eval_record(tmp_path / "b.eval.json")["threshold"] == 0.35


MISSING, ZERO = '{"model": "unet", "tta": "none"}', '{"model": "unet", "threshold": 0, "tta": "none"}'


@pytest.mark.parametrize("text", [MISSING, ZERO])
def test_a_missing_or_out_of_range_threshold_is_refused(tmp_path, text):
    (tmp_path / "m.eval.json").write_text(text)
    with pytest.raises(UserError, match="threshold must be a number strictly between 0 and 1 \\(or null\\)"):
        read_eval_record(tmp_path / "m.eval.json")
