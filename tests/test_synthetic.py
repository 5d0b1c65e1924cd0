import numpy as np
import pytest

from fedcl.data import NUM_CLASSES, Stain, generate_tiles, perturb


def tiles(seed=0, count=6, size=64, stain=None):
    return generate_tiles(
        count, size=size, stain=stain or Stain(), seed=np.random.SeedSequence(seed)
    )


def test_same_seed_same_bytes_and_different_seed_differs():
    images_a, masks_a = tiles(seed=3)
    images_b, masks_b = tiles(seed=3)
    assert images_a.tobytes() == images_b.tobytes()
    assert masks_a.tobytes() == masks_b.tobytes()
    images_c, masks_c = tiles(seed=4)
    assert images_a.tobytes() != images_c.tobytes()
    assert masks_a.tobytes() != masks_c.tobytes()


def test_a_prefix_of_a_longer_stream_equals_a_shorter_stream():
    short_images, short_masks = tiles(count=3)
    long_images, long_masks = tiles(count=7)
    np.testing.assert_array_equal(short_images, long_images[:3])
    np.testing.assert_array_equal(short_masks, long_masks[:3])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_and_label_range(size):
    images, masks = tiles(size=size, count=4)
    assert images.shape == (4, size, size, 3) and images.dtype == np.uint8
    assert masks.shape == (4, size, size) and masks.dtype == np.uint8
    assert masks.max() < NUM_CLASSES


def test_masks_describe_the_pixels_they_label():
    images, masks = tiles(count=80)
    brightness = images.astype(float).mean(-1)
    mean = {c: brightness[masks == c].mean() for c in range(NUM_CLASSES)}
    dark = {c: (brightness[masks == c] < 110).mean() for c in range(NUM_CLASSES)}
    # Glass is near white; every tissue class is darker.
    assert mean[0] > 215
    assert all(mean[c] < mean[0] - 40 for c in range(1, NUM_CLASSES))
    # Nuclear density: inflammatory and tumor crowded, stroma sparse.
    assert dark[3] > dark[2] and dark[1] > dark[2]
    # Every class appears: the default class mix covers all five.
    assert set(np.unique(masks)) == set(range(NUM_CLASSES))


def test_beer_lambert_zero_stain_renders_the_background_and_more_stain_is_darker():
    stain = Stain()
    zero = stain.render(np.zeros((1, 2), np.float32))
    np.testing.assert_allclose(zero[0], stain.background, rtol=1e-6)
    light = stain.render(np.array([[0.2, 0.2]], np.float32))
    heavy = stain.render(np.array([[0.8, 0.8]], np.float32))
    assert (heavy < light).all() and (light < zero).all()
    # Hematoxylin absorbs red most: a pure-H pixel is bluish (blue > red).
    hematoxylin = stain.render(np.array([[1.0, 0.0]], np.float32))[0]
    assert hematoxylin[2] > hematoxylin[0]


def test_stain_shift_changes_the_tiles_but_not_the_masks():
    shifted = perturb(Stain(), np.random.default_rng(1), strength=1.0)
    images_a, masks_a = tiles(seed=5)
    images_b, masks_b = tiles(seed=5, stain=shifted)
    np.testing.assert_array_equal(masks_a, masks_b)
    assert np.abs(images_a.astype(int) - images_b.astype(int)).mean() > 5


def test_invalid_class_mix_is_rejected():
    with pytest.raises(ValueError, match="class_mix"):
        generate_tiles(
            1, size=32, stain=Stain(), seed=np.random.SeedSequence(0), class_mix=(1, 0, 0)
        )
