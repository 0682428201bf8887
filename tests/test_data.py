"""Data sets: the built-in shapes, digits, and every file format on small files made here."""
import gzip
import os
import pickle
import struct
import sys

import numpy as np
import pytest

from cnnspec.data import SHAPE_CLASSES, load_dataset, make_shapes, read_array
from cnnspec.data.files import read_idx
from cnnspec.errors import CnnSpecError


# -- shapes -------------------------------------------------------------------------------------

def test_shapes_is_deterministic_in_the_seed():
    a, ya = make_shapes(50, (1, 28, 28), seed=3)
    b, yb = make_shapes(50, (1, 28, 28), seed=3)
    c, _ = make_shapes(50, (1, 28, 28), seed=4)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, c)


def test_shapes_balanced_in_range_and_at_the_input_size():
    x, y = make_shapes(200, (3, 20, 24), seed=0)
    assert x.shape == (200, 3, 20, 24) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [20] * len(SHAPE_CLASSES)
    # colour jitter: the channels of a picture differ
    assert np.abs(x[:, 0] - x[:, 1]).mean() > 0.02


def test_shapes_are_drawn_at_different_places():
    x, y = make_shapes(400, (1, 32, 32), seed=0)
    ink = x[y == SHAPE_CLASSES.index("disk"), 0] > 0.5
    centres = [np.argwhere(picture).mean(axis=0) for picture in ink]
    assert np.ptp([c[1] for c in centres]) > 8 and np.ptp([c[0] for c in centres]) > 8


def test_load_shapes_splits_and_selects_classes():
    data = load_dataset("shapes:square,plus,n=300", (1, 28, 28), seed=1, val_split=0.2)
    assert data.classes == ["square", "plus"]
    assert len(data.x_train) == 240 and len(data.x_val) == 60
    assert set(np.unique(data.y_train)) == {0, 1}
    again = load_dataset("shapes:square,plus,n=300", (1, 28, 28), seed=1, val_split=0.2)
    assert np.array_equal(data.x_val, again.x_val)
    assert "240 train / 60 val samples of 1x28x28, 2 classes" in data.describe()


@pytest.mark.parametrize("spec, message", [
    ("shapes:plsu", "no class 'plsu'"),
    ("shapes:plus,plus", "listed twice"),
    ("shapes:n=0", "positive number"),
    ("shape", "unknown data set"),
    ("mnist", "mnist:DIR"),
])
def test_bad_data_specs(spec, message):
    with pytest.raises(CnnSpecError, match=message) as info:
        load_dataset(spec, (1, 28, 28))
    if spec == "shapes:plsu":
        assert "did you mean `plus`" in str(info.value)
    if spec == "shape":
        assert "did you mean `shapes`" in str(info.value)


def test_shapes_need_a_picture_input():
    with pytest.raises(CnnSpecError, match="network's input is 64") as info:
        load_dataset("shapes", (64,))
    assert "1x28x28" in str(info.value)
    with pytest.raises(CnnSpecError, match="at least 8x8"):
        load_dataset("shapes", (1, 6, 6))


def test_labels_must_fit_the_output():
    with pytest.raises(CnnSpecError, match=r"10 classes .* output has 4 units"):
        load_dataset("shapes:n=40", (1, 16, 16), output_shape=(4,))
    with pytest.raises(CnnSpecError, match=r"output is 2x3x3, not a vector"):
        load_dataset("shapes:n=40", (1, 16, 16), output_shape=(2, 3, 3))
    load_dataset("shapes:plus,x,n=40", (1, 16, 16), output_shape=(10,))       # fewer classes is fine
    load_dataset("shapes:plus,x,n=40", (1, 16, 16), output_shape=(2, 1, 1))


def test_val_split_bounds():
    with pytest.raises(CnnSpecError, match="val_split"):
        load_dataset("shapes:n=20", (1, 16, 16), val_split=1.0)
    data = load_dataset("shapes:n=20", (1, 16, 16), val_split=0.0)
    assert len(data.x_val) == 0 and len(data.x_train) == 20
    with pytest.raises(CnnSpecError, match="no val samples"):
        data.split("val")


# -- digits -------------------------------------------------------------------------------------

def test_digits():
    pytest.importorskip("sklearn")
    data = load_dataset("digits", (1, 8, 8), val_split=0.1)
    assert data.x_train.shape[1:] == (1, 8, 8) and len(data.x_train) + len(data.x_val) == 1797
    assert data.x_train.max() == 1.0 and data.classes == [str(i) for i in range(10)]
    flat = load_dataset("digits", (64,))
    assert flat.x_train.shape[1:] == (64,)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(CnnSpecError, match="needs scikit-learn") as info:
        load_dataset("digits", (1, 8, 8))
    assert "pip install cnnspec[digits]" in str(info.value)


def test_digits_shape_mismatch_names_both_shapes():
    pytest.importorskip("sklearn")
    with pytest.raises(CnnSpecError, match="samples of shape 1x8x8, but the network's input is 1x28x28"):
        load_dataset("digits", (1, 28, 28))


# -- .npz ---------------------------------------------------------------------------------------

def test_npz_formats(tmp_path):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (30, 12, 10), dtype=np.uint8)        # N x H x W, bytes
    np.savez(tmp_path / "grey.npz", x=pictures, y=np.arange(30) % 3, classes=np.array(["a", "b", "c"]))
    data = load_dataset(str(tmp_path / "grey.npz"), (1, 12, 10), val_split=0.0)
    assert data.classes == ["a", "b", "c"] and data.x_train.shape == (30, 1, 12, 10)
    assert data.x_train.max() <= 1.0 and data.x_train.dtype == np.float32
    order = np.argsort(np.random.default_rng([0, 0x5917]).permutation(30))
    assert np.allclose(data.x_train[order][:, 0], pictures / 255)

    channels_last = rng.random((8, 6, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "nhwc.npz", x=channels_last, y=np.zeros(8, int), x_test=channels_last[:2], y_test=[0, 0])
    data = load_dataset("nhwc.npz", (3, 6, 6), val_split=0.25, base_dir=tmp_path)
    assert data.x_train.shape == (6, 3, 6, 6) and data.x_test.shape == (2, 3, 6, 6)
    assert np.array_equal(data.x_test[0], channels_last[0].transpose(2, 0, 1))

    flat = load_dataset(str(tmp_path / "grey.npz"), (120,))
    assert flat.x_train.shape[1:] == (120,)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "nox.npz", y=[0, 1])
    with pytest.raises(CnnSpecError, match="no array 'x'") as info:
        load_dataset(str(tmp_path / "nox.npz"), (4,))
    assert str(tmp_path / "nox.npz") in str(info.value)

    np.savez(tmp_path / "good.npz", x=np.zeros((4, 1, 5, 5), np.float32), y=[0, 1, 0, 1])
    with pytest.raises(CnnSpecError, match="samples of shape 1x5x5, but the network's input is 1x28x28"):
        load_dataset(str(tmp_path / "good.npz"), (1, 28, 28))
    with pytest.raises(CnnSpecError, match="2 classes"):
        load_dataset(str(tmp_path / "good.npz"), (1, 5, 5), output_shape=(1,))

    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CnnSpecError, match="corrupt or truncated") as info:
        load_dataset(str(tmp_path / "cut.npz"), (1, 5, 5))
    assert "cut.npz" in str(info.value)

    np.savez(tmp_path / "fractional.npz", x=np.zeros((2, 3)), y=[0.5, 1])
    with pytest.raises(CnnSpecError, match="whole numbers"):
        load_dataset(str(tmp_path / "fractional.npz"), (3,))
    np.savez(tmp_path / "negative.npz", x=np.zeros((2, 3)), y=[-1, 1])
    with pytest.raises(CnnSpecError, match=">= 0"):
        load_dataset(str(tmp_path / "negative.npz"), (3,))
    np.savez(tmp_path / "count.npz", x=np.zeros((3, 3)), y=[0, 1])
    with pytest.raises(CnnSpecError, match="one label per sample"):
        load_dataset(str(tmp_path / "count.npz"), (3,))
    with pytest.raises(CnnSpecError, match="no such data set file"):
        load_dataset(str(tmp_path / "missing.npz"), (3,))


# -- MNIST IDX ----------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=20, n_test=6, gz=True):
    rng = np.random.default_rng(1)
    folder.mkdir(exist_ok=True)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
             "train-labels-idx1-ubyte": np.arange(n_train) % 10,
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
             "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, array in parts.items():
        data = idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return parts


@pytest.mark.parametrize("gz", [True, False])
def test_mnist(tmp_path, gz):
    parts = write_mnist(tmp_path / "mnist", gz=gz)
    data = load_dataset(f"mnist:{tmp_path / 'mnist'}", (1, 28, 28), val_split=0.25)
    assert data.x_train.shape == (15, 1, 28, 28) and data.x_val.shape == (5, 1, 28, 28)
    assert np.allclose(data.x_test[:, 0], parts["t10k-images-idx3-ubyte"] / 255)
    assert data.y_test.tolist() == parts["t10k-labels-idx1-ubyte"].tolist()
    with pytest.raises(CnnSpecError, match="samples of shape 1x28x28, but the network's input is 1x32x32"):
        load_dataset(f"mnist:{tmp_path / 'mnist'}", (1, 32, 32))


def test_idx_errors(tmp_path):
    good = idx_bytes(np.zeros((3, 4, 4)))
    cases = {
        "magic.idx": (b"\x01\x02" + good[2:], "magic number"),
        "type.idx": (good[:2] + b"\x0d" + good[3:], "data type 0x0d"),
        "dims.idx": (idx_bytes(np.zeros((3, 4))), "2 dimension"),
        "short.idx": (good[:-5], "truncated"),
        "long.idx": (good + b"\x00", "trailing data"),
        "header.idx": (good[:9], "truncated inside its header"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CnnSpecError, match=message) as info:
            read_idx(tmp_path / name, 3)
        assert name in str(info.value)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(CnnSpecError, match="corrupt or truncated gzip") as info:
        read_idx(tmp_path / "cut.gz", 3)
    assert "cut.gz" in str(info.value)


def test_mnist_missing_and_mismatched_files(tmp_path):
    write_mnist(tmp_path / "m", gz=False)
    os.remove(tmp_path / "m" / "t10k-labels-idx1-ubyte")
    with pytest.raises(CnnSpecError, match="no MNIST test labels file"):
        load_dataset(f"mnist:{tmp_path / 'm'}", (1, 28, 28))
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(CnnSpecError, match="5 labels for 6 images"):
        load_dataset(f"mnist:{tmp_path / 'm'}", (1, 28, 28))
    with pytest.raises(CnnSpecError, match="no such folder"):
        load_dataset(f"mnist:{tmp_path / 'nowhere'}", (1, 28, 28))


def test_a_test_split_of_another_shape_is_named_with_its_file(tmp_path):
    """QA defect 5: only the test split differs (MNIST train 28x28, t10k 32x32; a .npz whose
    x_test has another shape): the error said the data set "has samples of shape 1x32x32" and
    hinted to change the network's input, which the train samples fit. It names the test split
    and its file now, and says the train and test samples differ in shape."""
    write_mnist(tmp_path / "m", gz=False)
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((6, 32, 32))))
    with pytest.raises(CnnSpecError) as info:
        load_dataset(f"mnist:{tmp_path / 'm'}", (1, 28, 28))
    err = info.value
    assert err.file == str(tmp_path / "m" / "t10k-images-idx3-ubyte")
    assert err.message == (f"data set 'mnist:{tmp_path / 'm'}': the train and test samples differ in shape: the test "
                           f"split has samples of shape 1x32x32, the train split 1x28x28 (which fits the network's "
                           f"input 1x28x28)")
    assert err.hint.startswith("give the test samples the train samples' shape")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 5, 5)), y=[0, 1, 0, 1], x_test=np.zeros((2, 6, 6)), y_test=[0, 1])
    with pytest.raises(CnnSpecError, match=r"the train and test samples differ in shape: the test split has samples "
                                           r"of shape 6x6, the train split 5x5 \(which fits the network's input "
                                           r"1x5x5\)") as info:
        load_dataset(str(tmp_path / "d.npz"), (1, 5, 5))
    assert info.value.file == str(tmp_path / "d.npz")
    with pytest.raises(CnnSpecError, match="has samples of shape 5x5, but the network's input is 1x6x6"):
        load_dataset(str(tmp_path / "d.npz"), (1, 6, 6))          # the train split's error, as before


# -- CIFAR-10 -----------------------------------------------------------------------------------

def write_cifar(folder, n=4):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [b"img%d.png" % i for i in range(n)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}, handle, protocol=2)


def test_cifar10(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset(f"cifar10:{tmp_path}", (3, 32, 32), val_split=0.25)
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.classes == [f"c{i}" for i in range(10)]
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    assert np.allclose(data.x_test[1], raw[b"data"][1].reshape(3, 32, 32) / 255)
    with pytest.raises(CnnSpecError, match="samples of shape 3x32x32, but the network's input is 1x32x32"):
        load_dataset(f"cifar10:{tmp_path}", (1, 32, 32))


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    write_cifar(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle, protocol=2)
    with pytest.raises(CnnSpecError, match=r"refusing to load (posix|nt|os)\.system") as info:
        load_dataset(f"cifar10:{tmp_path / 'c'}", (3, 32, 32))
    assert "data_batch_3" in str(info.value)


def test_cifar10_corrupt_and_malformed(tmp_path):
    write_cifar(tmp_path / "c")
    path = tmp_path / "c" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CnnSpecError, match="corrupt, truncated") as info:
        load_dataset(f"cifar10:{tmp_path / 'c'}", (3, 32, 32))
    assert "data_batch_2" in str(info.value)
    with open(path, "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(CnnSpecError, match=r"shape \(N, 3072\)"):
        load_dataset(f"cifar10:{tmp_path / 'c'}", (3, 32, 32))
    os.remove(path)
    with pytest.raises(CnnSpecError, match="missing CIFAR-10 batch") as info:
        load_dataset(f"cifar10:{tmp_path / 'c'}", (3, 32, 32))
    assert "data_batch_2" in str(info.value)


# -- image folder -------------------------------------------------------------------------------

def write_folder(root):
    from PIL import Image

    for k, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            colour = (200, 30 * i, 10) if k == 0 else (10, 30 * i, 200)
            Image.new("RGB", (20 + i, 16), colour).save(root / name / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not a picture")


def test_image_folder(tmp_path):
    write_folder(tmp_path / "pets")
    data = load_dataset(f"folder:{tmp_path / 'pets'}", (3, 8, 8), val_split=0.0)
    assert data.classes == ["cat", "dog"] and data.x_train.shape == (6, 3, 8, 8)
    red = data.x_train[data.y_train == 0][:, 0].mean()
    blue = data.x_train[data.y_train == 0][:, 2].mean()
    assert red > 0.7 and blue < 0.1
    grey = load_dataset(f"folder:{tmp_path / 'pets'}", (1, 5, 7), val_split=0.0)
    assert grey.x_train.shape == (6, 1, 5, 7)


def test_image_folder_errors(tmp_path):
    write_folder(tmp_path / "pets")
    (tmp_path / "pets" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(CnnSpecError, match="cannot read this picture") as info:
        load_dataset(f"folder:{tmp_path / 'pets'}", (3, 8, 8))
    assert "broken.png" in str(info.value)
    with pytest.raises(CnnSpecError, match="not 2 channels"):
        load_dataset(f"folder:{tmp_path / 'pets'}", (2, 8, 8))
    (tmp_path / "empty" / "only").mkdir(parents=True)
    with pytest.raises(CnnSpecError, match="holds no pictures"):
        load_dataset(f"folder:{tmp_path / 'empty'}", (3, 8, 8))
    (tmp_path / "none").mkdir()
    with pytest.raises(CnnSpecError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'none'}", (3, 8, 8))



def test_sixteen_bit_pictures_are_scaled_by_their_range(tmp_path):
    """A 16-bit grey PNG holds value / 65535 (the PNG specification); Pillow's convert() would clip
    every value above 255 to white. 32-bit and float pictures have no range to scale by: refused."""
    from PIL import Image

    values = np.array([[100, 32768], [65535, 0]], np.uint16)
    for name in ("a", "b"):
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.fromarray(values).save(tmp_path / "pics" / name / "x.png")
    assert Image.open(tmp_path / "pics" / "a" / "x.png").mode == "I;16"
    for channels in (1, 3):
        data = load_dataset(f"folder:{tmp_path / 'pics'}", (channels, 2, 2), val_split=0.0)
        assert np.allclose(data.x_train[0], values / 65535.0, atol=1e-6)
    assert np.allclose(read_array(tmp_path / "pics" / "a" / "x.png", (1, 2, 2))[0], values / 65535.0, atol=1e-6)
    Image.fromarray(np.full((2, 2), 0.5, np.float32)).save(tmp_path / "pics" / "a" / "f.tif")
    with pytest.raises(CnnSpecError, match="floating-point picture") as info:
        load_dataset(f"folder:{tmp_path / 'pics'}", (1, 2, 2))
    assert "f.tif" in str(info.value)


# -- one input for `run` ------------------------------------------------------------------------

def test_read_array(tmp_path):
    from PIL import Image

    np.save(tmp_path / "a.npy", np.arange(36, dtype=np.float64).reshape(6, 6))
    assert read_array(tmp_path / "a.npy", (1, 6, 6)).shape == (1, 6, 6)
    np.save(tmp_path / "b.npy", np.zeros((1, 2, 6, 6), np.uint8) + 255)
    assert read_array(tmp_path / "b.npy", (2, 6, 6)).max() == 1.0
    with pytest.raises(CnnSpecError, match="array has shape 5x5, the network's input is 1x6x6"):
        np.save(tmp_path / "c.npy", np.zeros((5, 5)))
        read_array(tmp_path / "c.npy", (1, 6, 6))
    Image.new("L", (12, 12), 255).save(tmp_path / "w.png")
    assert np.allclose(read_array(tmp_path / "w.png", (1, 6, 6)), 1.0)
    with pytest.raises(CnnSpecError, match="only feed an image input"):
        read_array(tmp_path / "w.png", (36,))
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    with pytest.raises(CnnSpecError, match="bad.npy"):
        read_array(tmp_path / "bad.npy", (1, 6, 6))
