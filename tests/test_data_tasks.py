"""Data for the tasks beyond classification: masks from shapes, .npz and folders (with located
errors), the masking and erasing corruptions, and masks moved with their pictures."""
import numpy as np
import pytest

from cnnspec.data import Augmenter, load_dataset
from cnnspec.data.augment import erase, mask
from cnnspec.data.shapes import make_shapes
from cnnspec.errors import CnnSpecError


def test_shapes_masks_mark_the_figure_with_its_class_plus_one():
    x, labels = make_shapes(40, (1, 16, 16), seed=3)
    x2, labels2, masks = make_shapes(40, (1, 16, 16), seed=3, masks=True)
    assert np.array_equal(x, x2) and np.array_equal(labels, labels2)          # the same pictures
    for picture, label, m in zip(x2, labels2, masks):
        assert set(np.unique(m)) == {0, label + 1}
        # the figure is brighter than the background: its pixels' mean above the rest's
        assert picture[0][m > 0].mean() > picture[0][m == 0].mean() + 0.2


def test_segment_dataset_from_shapes_and_npz(tmp_path):
    data = load_dataset("shapes:plus,x,n=50", (1, 12, 12), task="segment", output_shape=(3, 12, 12))
    assert data.y_train.shape[1:] == (12, 12) and data.classes == ["background", "plus", "x"]
    assert "with 12x12 masks of 3 classes" in data.describe()
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 1, 6, 6), np.float32), y=np.ones((5, 6, 6), np.int64))
    data = load_dataset(str(tmp_path / "d.npz"), (1, 6, 6), task="segment", output_shape=(2, 6, 6))
    assert data.y_train.shape[1:] == (6, 6)
    with pytest.raises(CnnSpecError, match=r"masks with class 1, but the network's output has 1 channel"):
        load_dataset(str(tmp_path / "d.npz"), (1, 6, 6), task="segment", output_shape=(1, 6, 6))
    with pytest.raises(CnnSpecError, match="segmentation gives a class score per pixel"):
        load_dataset("shapes", (1, 12, 12), task="segment", output_shape=(11,))
    with pytest.raises(CnnSpecError, match="has no masks for segmentation"):
        load_dataset("digits", (1, 8, 8), task="segment", output_shape=(2, 8, 8))
    np.savez(tmp_path / "xonly.npz", x=np.zeros((5, 1, 6, 6), np.float32))
    data = load_dataset(str(tmp_path / "xonly.npz"), (1, 6, 6), task="reconstruct")   # pictures alone
    assert data.classes == [] and len(data.x_train) + len(data.x_val) == 5


def _write(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)


def test_segmentation_folder_and_its_errors(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        _write(tmp_path / "images" / f"p{k}.png", np.full((8, 8), 60 * k, np.uint8))
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:6] = k
        _write(tmp_path / "masks" / f"p{k}.png", m)
    data = load_dataset(f"folder:{tmp_path}", (1, 8, 8), task="segment", output_shape=(3, 8, 8), val_split=0.0)
    assert data.y_train.shape == (3, 8, 8)
    assert sorted(int(m.max()) for m in data.y_train) == [0, 1, 2]
    data = load_dataset(f"folder:{tmp_path}", (1, 4, 4), task="segment", output_shape=(3, 4, 4), val_split=0.0)
    assert data.y_train.shape == (3, 4, 4) and set(np.unique(data.y_train)) <= {0, 1, 2}    # nearest: no blends
    (tmp_path / "images" / "p3.png").write_bytes((tmp_path / "images" / "p0.png").read_bytes())
    with pytest.raises(CnnSpecError, match=r"no mask for this picture \(expected masks/p3.png\)") as err:
        load_dataset(f"folder:{tmp_path}", (1, 8, 8), task="segment", output_shape=(3, 8, 8))
    assert err.value.file.endswith("p3.png")
    _write(tmp_path / "masks" / "p3.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CnnSpecError, match="a mask must be a single-channel picture of class indexes"):
        load_dataset(f"folder:{tmp_path}", (1, 8, 8), task="segment", output_shape=(3, 8, 8))
    _write(tmp_path / "masks" / "p3.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(CnnSpecError, match="this mask is 8x6 pixels, its picture p3.png 8x8"):
        load_dataset(f"folder:{tmp_path}", (1, 8, 8), task="segment", output_shape=(3, 8, 8))


def test_mask_zeroes_whole_pixels_with_its_probability():
    x = np.ones((200, 3, 10, 10), np.float32)
    out = mask(x, np.random.default_rng(0), 0.3)
    zero = out == 0
    assert np.all(zero.all(axis=1) == zero.any(axis=1))                  # every channel of a pixel
    assert zero[:, 0].mean() == pytest.approx(0.3, abs=0.01)
    assert np.all(x == 1)                                                # its input is left alone


def test_erase_zeroes_one_rectangle_of_the_asked_area():
    x = np.ones((300, 1, 20, 20), np.float32)
    out = erase(x, np.random.default_rng(1), 0.1, 0.2)
    for picture in out[:, 0]:
        rows, cols = np.nonzero(picture == 0)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)     # a rectangle
    areas = (out == 0).mean(axis=(1, 2, 3))
    assert 0.05 < areas.min() and areas.max() < 0.3 and 0.1 <= np.median(areas) <= 0.2


def test_geometric_steps_move_the_masks_with_the_pictures():
    x, _, masks = make_shapes(30, (1, 16, 16), seed=0, masks=True)
    augment = Augmenter([("flip", ()), ("shift", (2,)), ("noise", (0.1,))], (1, 16, 16))
    moved, moved_masks = augment(x, np.random.default_rng(5), masks)
    # the mask still marks the bright figure: the moved picture's figure pixels are brighter
    for picture, m in zip(moved, moved_masks):
        if (m > 0).any() and (m == 0).any():
            assert picture[0][m > 0].mean() > picture[0][m == 0].mean() + 0.15
    flipped, flipped_masks = Augmenter([("flip", ())], (1, 16, 16))(x, np.random.default_rng(2), masks)
    for a, b, ma, mb in zip(x, flipped, masks, flipped_masks):
        assert (np.array_equal(b, a) and np.array_equal(mb, ma)) or \
            (np.array_equal(b, a[..., ::-1]) and np.array_equal(mb, ma[..., ::-1]))
