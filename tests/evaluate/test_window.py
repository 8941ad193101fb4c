"""Sliding-window inference: every pixel covered, overlaps averaged, the same logits as the whole image for a
model that sees each pixel alone."""

import numpy as np
import pytest
import torch

from pipeline.data.loader import make_eval_loader
from pipeline.evaluate.inference import iter_logits, torch_forward, window_forward, window_starts


@pytest.mark.parametrize(("length", "window", "starts"), [(64, 64, [0]), (32, 64, [0]), (96, 64, [0, 32]),
                                                          (160, 64, [0, 32, 64, 96])])  # fmt: skip
def test_windows_cover_the_axis_half_a_window_apart(length, window, starts):
    assert window_starts(length, window) == starts
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + window] = True
    assert covered.all()


def test_a_pointwise_model_gives_the_same_logits_in_windows_as_whole():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    forward = torch_forward(model, torch.device("cpu"))
    x = np.random.default_rng(0).normal(size=(2, 3, 96, 160)).astype(np.float32)
    np.testing.assert_allclose(window_forward(forward, x, 64), forward(x), atol=1e-5)


def test_overlapping_windows_are_averaged():
    calls = []

    def forward(x):  # each window's logit is the number of windows run before it
        calls.append(x.shape)
        return np.full((x.shape[0], 1, *x.shape[2:]), float(len(calls) - 1), np.float32)

    logits = window_forward(forward, np.zeros((1, 3, 32, 96), np.float32), 64)
    assert calls == [(1, 3, 32, 64), (1, 3, 32, 64)]  # windows at 0 and 32, the 32-pixel height taken whole
    assert logits[0, 0, 0, :32].tolist() == [0.0] * 32 and logits[0, 0, 0, 64:].tolist() == [1.0] * 32
    assert logits[0, 0, 0, 32:64].tolist() == [0.5] * 32  # both windows cover the middle
    calls.clear()
    window_forward(forward, np.zeros((1, 3, 32, 64), np.float32), 64)  # fits one window: taken whole, once
    assert calls == [(1, 3, 32, 64)]


def test_the_evaluate_loop_runs_its_batches_in_windows():
    seen = []

    def forward(x):
        seen.append(x.shape[2:])
        return np.zeros((x.shape[0], 1, *x.shape[2:]), np.float32)

    images = np.zeros((3, 64, 96, 3), np.uint8)
    shapes = [logits.shape for logits, _ in iter_logits(forward, images, 2, "none", window=64)]
    assert shapes == [(2, 1, 64, 96), (1, 1, 64, 96)] and set(seen) == {(64, 64)}


def test_each_image_runs_with_only_its_own_padding_to_32():
    seen = []

    def forward(x):
        seen.append(x.shape)
        return np.ones((x.shape[0], 1, *x.shape[2:]), np.float32)

    images = np.zeros((3, 96, 96, 3), np.uint8)  # a canvas that fits portraits and landscapes
    sizes = np.array([[40, 90], [90, 40], [33, 70]])  # padded to 64x96, 96x64 and 64x96
    (logits, _), *_ = iter_logits(forward, images, 3, "none", sizes=sizes)
    assert seen == [(2, 3, 64, 96), (1, 3, 96, 64)]  # the two of one shape run together
    assert logits.shape == (3, 1, 96, 96)
    assert logits[0, 0, :64, :].all() and not logits[0, 0, 64:].any()
    assert logits[1, 0, :, :64].all() and not logits[1, 0, :, 64:].any()


def test_an_eval_loader_given_shapes_batches_one_shape_at_a_time():
    shapes = np.array([[32, 64], [64, 32], [32, 64], [32, 64], [64, 32]])
    loader = make_eval_loader(list(range(5)), 2, 0, "cpu", shapes)
    assert [batch.tolist() for batch in loader] == [[0, 2], [3], [1, 4]]
