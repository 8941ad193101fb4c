"""The model's input on the device (pipeline/data/colour.py): the batch-wise colour jitter is torchvision's
per-image jitter, and normalisation is ImageNet's."""

import torch
from torchvision.transforms.v2 import functional as F

from pipeline.data.colour import IDENTITY, MEAN, STD, colour_jitter, draw_jitter, model_input

OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)


def test_uint8_to_normalised_float_is_imagenets_formula():
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    expected = (images.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.equal(model_input(images), expected)
    identity = torch.tensor([IDENTITY] * 2)
    assert torch.equal(model_input(images, identity), expected)  # the identity jitter changes no bit


def test_batchwise_jitter_is_torchvisions_ops_per_image_in_each_images_order():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 8, 8)
    jitter = torch.stack([draw_jitter(0.5) for _ in range(6)])
    assert len({tuple(j[3:].tolist()) for j in jitter}) > 1  # the images do not all share one order
    out = colour_jitter(images, jitter)
    for image, result, (b, c, s, *order) in zip(images, out, jitter.tolist(), strict=True):
        factors = (b, c, s)
        expected = image
        for op in order:
            expected = OPS[int(op)](expected, factors[int(op)])
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


def test_a_jitter_draw_is_a_function_of_the_seed_and_strength_zero_draws_nothing():
    torch.manual_seed(3)
    first = draw_jitter(0.2)
    torch.manual_seed(3)
    assert torch.equal(draw_jitter(0.2), first)
    factors, order = first[:3], first[3:]
    assert ((factors >= 0.8) & (factors <= 1.2)).all() and sorted(order.tolist()) == [0.0, 1.0, 2.0]
    state = torch.get_rng_state()
    assert draw_jitter(0.0).tolist() == list(IDENTITY)
    assert torch.equal(torch.get_rng_state(), state)
