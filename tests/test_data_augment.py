"""Augmentation: each step's defining property, seeding, and its errors."""
import numpy as np
import pytest

from cnnspec.data import Augmenter, parse_augment
from cnnspec.data.augment import flip, noise, rotate, scale, shift, vflip
from cnnspec.errors import CnnSpecError


def pictures(n=16, shape=(2, 9, 11), seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("step, axis", [(flip, -1), (vflip, -2)])
def test_flips_are_involutions_that_mirror_about_half_the_samples(step, axis):
    x = pictures(64)
    once = step(x, rng(5))
    assert np.array_equal(step(once, rng(5)), x)               # same draws: the same samples flip back
    mirrored = [np.array_equal(once[i], np.flip(x[i], axis)) for i in range(64)]
    unchanged = [np.array_equal(once[i], x[i]) for i in range(64)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 16 < sum(mirrored) < 48


def test_flip_reverses_sequences():
    x = pictures(40, (3, 7))
    once = flip(x, rng(1))
    assert all(np.array_equal(once[i], x[i]) or np.array_equal(once[i], x[i, :, ::-1]) for i in range(40))


def test_shift_moves_mass_by_whole_pixels():
    x = np.zeros((50, 1, 15, 15), np.float32)
    x[:, 0, 7, 7] = 1.0
    out = shift(x, rng(2), 3)
    assert np.allclose(out.sum(axis=(1, 2, 3)), 1.0)           # nothing falls out: mass kept
    position = np.argwhere(out[:, 0] == 1.0)[:, 1:]
    moves = position - 7
    assert np.abs(moves).max() <= 3 and len({tuple(m) for m in moves}) > 10


def test_shift_of_a_sequence_and_what_falls_out():
    x = np.zeros((20, 2, 10), np.float32)
    x[:, :, 0] = 1.0                                            # mass at the left edge
    out = shift(x, rng(3), 2)
    assert set(np.round(out.sum(axis=(1, 2)), 6)) <= {0.0, 2.0}   # moved left: gone; else kept
    kept = out.sum(axis=(1, 2)) == 2.0
    assert {int(np.argmax(out[i, 0])) for i in np.nonzero(kept)[0]} <= {0, 1, 2}


def test_rotate_and_scale_are_identities_at_zero():
    x = pictures()
    assert np.allclose(rotate(x, rng(), 0.0), x, atol=1e-6)
    assert np.allclose(scale(x, rng(), 1.0, 1.0), x, atol=1e-6)


def test_rotate_quarter_turn_and_scale_zooms():
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4:] = 1.0                                        # a ray from the centre to the right
    turned = rotate(x, np.random.default_rng(0), 90.0)          # angle drawn in [-90, 90]
    assert np.isclose(turned.sum(), x.sum(), atol=0.6)          # bilinear: mass about kept
    blob = np.zeros((1, 1, 21, 21), np.float32)
    blob[0, 0, 8:13, 8:13] = 1.0
    bigger = scale(blob, rng(), 2.0, 2.0)
    assert bigger.sum() > 3 * blob.sum()
    assert np.isclose(bigger[0, 0, 10, 10], 1.0)


def test_exact_quarter_turn():
    from cnnspec.data.augment import _affine

    x = pictures(3, (1, 7, 7))
    turned = _affine(x, np.full(3, np.pi / 2), np.ones(3))
    assert np.allclose(turned, np.rot90(x, k=-1, axes=(2, 3)), atol=1e-5) or \
        np.allclose(turned, np.rot90(x, k=1, axes=(2, 3)), atol=1e-5)


def test_noise_has_the_asked_spread():
    x = np.zeros((100, 1, 20, 20), np.float32)
    out = noise(x, rng(), 0.3)
    assert out.dtype == np.float32 and abs(out.std() - 0.3) < 0.01


def test_augmenter_is_seeded_keeps_order_and_leaves_input_alone():
    x = pictures(32, (1, 12, 12))
    x += np.arange(32, dtype=np.float32)[:, None, None, None] * 10     # sample i has mean about 10 i
    before = x.copy()
    augment = Augmenter(["flip", "vflip", "rotate(20)", "shift(2)", "scale(0.9, 1.1)", "noise(0.01)"], x.shape[1:])
    a, b, c = augment(x, rng(7)), augment(x, rng(7)), augment(x, rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(x, before)                                   # input untouched
    assert a.shape == x.shape and a.dtype == np.float32
    # samples stay in their places, so labels (indexed alike) stay aligned with them
    assert np.array_equal(np.argsort(a.max(axis=(1, 2, 3))), np.arange(32))


def test_parse_augment_words_and_pairs():
    assert parse_augment(["flip", "rotate(15)", "scale( 0.9 , 1.1 )", "none"]) == [
        ("flip", ()), ("rotate", (15.0,)), ("scale", (0.9, 1.1))]
    assert parse_augment([("noise", (0.1,)), ("shift", (2,))]) == [("noise", (0.1,)), ("shift", (2.0,))]
    assert parse_augment(None) == []


@pytest.mark.parametrize("words, message", [
    (["flp"], "unknown augmentation `flp`"),
    (["rotate"], "takes 1 argument"),
    (["flip(1)"], "takes 0 argument"),
    (["scale(1.2, 0.8)"], "0 < lo <= hi"),
    (["shift(1.5)"], "whole number"),
    (["noise(-1)"], "std must be >= 0"),
    (["rotate(x)"], "not a number"),
    (["rotate(400)"], r"\[0, 180\]"),
    (["flip!"], "cannot read"),
])
def test_augment_errors(words, message):
    with pytest.raises(CnnSpecError, match=message) as info:
        parse_augment(words)
    if words == ["flp"]:
        assert "did you mean `flip`" in str(info.value)


def test_augmentations_that_need_pictures():
    with pytest.raises(CnnSpecError, match=r"rotate\(10\) needs an image \(CxHxW\); the network's input is 3x50"):
        Augmenter(["rotate(10)"], (3, 50))
    with pytest.raises(CnnSpecError, match="flip needs a sequence"):
        Augmenter(["flip"], (20,))
    assert Augmenter(["noise(0.1)", "shift(2)", "flip"], (3, 50))
    assert not Augmenter([], (20,))
