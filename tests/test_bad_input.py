"""Bad input never ends in a traceback or a memory bomb (issue 17): numbers too large anywhere in
the language, files that are devices or pipes, bombs in data files, networks larger than the
machine, NaN in data and kernels, bad arguments to the layer API.

A test that runs a bomb runs it in a child process under an address-space limit
(``resource.RLIMIT_AS``) and a timeout, so that a regression fails the test instead of taking the
memory of a machine shared with other work.
"""
import gzip
import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import cnnspec
from cnnspec import api
from cnnspec.cli import main
from cnnspec.errors import CnnSpecError
from cnnspec.kernels import reference

GiB = 2 ** 30
HEAD = "network N {\n    input x: 1x8x8\n"
HUGE = "1" + "0" * 320                       # 321 digits: more than a float holds


def bounded(args, memory=GiB, timeout=60, python=False, cwd=None):
    """``python -m cnnspec ARGS`` (or ``python -c ARGS[0]``) in a child limited to ``memory`` bytes
    of address space and ``timeout`` seconds."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    command = [sys.executable, "-c", args[0]] if python else [sys.executable, "-m", "cnnspec", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, cwd=cwd)


def assert_clean_error(done, *fragments):
    """Exit status 1, no traceback, and every fragment in the error output."""
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr[-3000:]


def error_of(text: str) -> CnnSpecError:
    with pytest.raises(CnnSpecError) as info:
        cnnspec.loads(text, file="f.cnn")
    return info.value


# -- 3. numbers too large -------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, col", [
    (HEAD + f"    dropout({HUGE})\n}}\n", 3, 13),
    (HEAD + f"    conv(1, 3x3, weights=[[{HUGE}, 0, 0], [0, 0, 0], [0, 0, 0]])\n}}\n", 3, 28),
    (HEAD + "    flatten -> dense(2)\n}\n" + f"train {{\n    optimizer = adam(betas=({HUGE}, 0.9))\n}}\n", 6, 29),
    (HEAD + "    flatten -> dense(2)\n}\n" + f"train {{\n    optimizer = sgd(lr={HUGE})\n}}\n", 6, 24),
    (HEAD + "    flatten -> dense(2)\n}\n" + f"train {{\n    augment = [rotate({HUGE})]\n}}\n", 6, 23),
    (f"network N {{\n    input x: 1x{HUGE}x{HUGE}\n    relu\n}}\n", 2, 14),
    (HEAD + "    dense(1000000000000000001)\n}\n", 3, 11),
])
def test_integer_literals_beyond_10_to_the_18_are_located_errors(text, line, col):
    err = error_of(text)
    assert (err.line, err.col) == (line, col) and err.message == "number too large (more than 10^18)", str(err)
    assert "^~~~" in str(err)


def test_float_literals_that_overflow_are_located_errors():
    err = error_of(HEAD + "    dropout(1e999)\n}\n")
    assert (err.line, err.col) == (3, 13) and "too large for a float" in err.message
    err = error_of(HEAD + "    flatten -> dense(2)\n}\ntrain {\n    optimizer = sgd(lr=2e308)\n}\n")
    assert (err.line, err.col) == (6, 24)


def test_the_largest_numbers_still_analyse_and_summarise():
    """check accepted a 1x10^200x10^200 input, then summary overflowed; at 10^18 both work."""
    net = cnnspec.loads("network N {\n    input x: 1x1000000000000000000x1000000000000000000\n"
                        "    conv(3, 3x3) -> relu -> flatten -> dense(1000000000000000000)\n}\n")
    table = net.summary_table(batch=1000000000000000000)
    assert "Memory:" in table and net.summary()["totals"]["params"] > 10 ** 36


@pytest.mark.parametrize("flags, message", [
    (["--lr", "inf"], "sgd's lr must be a positive finite number, got inf"),
    (["--lr", "nan"], "sgd's lr must be a positive finite number, got nan"),
    (["--momentum", "-1"], "sgd's momentum must be a number >= 0, got -1.0"),
    (["--optimizer", "adam(betas=(1.5, 0.9))"], "adam's betas must be two numbers in [0, 1), got (1.5, 0.9)"),
    (["--augment", "noise(1e400)"], "augmentation noise(inf): its arguments must be finite numbers"),
    (["--augment", "shift(8)"], "augmentation shift(8) would move every pixel out of the 8x8 input"),
])
def test_training_numbers_out_of_range_are_refused(tmp_path, capsys, flags, message):
    path = tmp_path / "n.cnn"
    path.write_text(HEAD + "    flatten -> dense(2)\n}\n")
    assert main(["train", str(path), "--data", "shapes:plus,x,n=20", "--out", str(tmp_path / "run"), "--no-progress",
                 *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_training_numbers_from_the_file_are_located(tmp_path):
    from cnnspec.train import fit

    path = tmp_path / "n.cnn"
    path.write_text(HEAD + "    flatten -> dense(2)\n}\ntrain {\n    optimizer = adam(lr=0.1, betas=(0.9, 1.0))\n}\n")
    with pytest.raises(CnnSpecError) as info:
        fit(cnnspec.load(path), progress=False)
    assert (info.value.line, info.value.col) == (6, 5) and "betas must be two numbers in [0, 1)" in info.value.message
    path.write_text(HEAD + "    flatten -> dense(2)\n}\n")
    with pytest.raises(CnnSpecError, match="lr 1000.* is too large for a floating-point number"):
        fit(cnnspec.load(path), progress=False, lr=10 ** 400)


# -- 4. analysis does not materialise fixed weights -----------------------------------------------

def test_check_of_fixed_weights_over_ten_million_channels_stays_small(tmp_path):
    path = tmp_path / "wide.cnn"
    path.write_text("network Wide {\n    input x: 10000000x8x8\n    conv(1, 3x3, weights=sobel_x)\n}\n")
    done = bounded(["check", str(path)], memory=GiB // 2, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wide.cnn: ok (Wide: 1 layer, 90,000,001 params" in done.stdout
    weights = cnnspec.load(path)["conv1"]["config"]["weights"]
    assert weights.shape == (1, 10_000_000, 3, 3) and weights.strides[1] == 0     # a view, not a copy
    assert weights[0, 9_999_999].tolist() == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]


def test_compiled_fixed_weights_are_the_full_array():
    net = cnnspec.loads("network N {\n    input x: 2x6x6\n    conv(2, 3x3, weights=[sobel_x, sobel_y])\n}\n")
    model = net.compile(dtype="float64")
    w = model.params["conv1"]["weight"]
    assert w.shape == (2, 2, 3, 3) and np.array_equal(w[1, 1], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    x = np.random.default_rng(0).normal(size=(1, 2, 6, 6))
    expected = reference.conv2d_forward(x, w, np.zeros(2), (1, 1), (0, 0, 0, 0))
    assert np.allclose(model.forward(x), expected)


# -- 5. only regular files, of a bounded size ------------------------------------------------------

def test_devices_pipes_and_folders_are_refused_with_the_reason(tmp_path):
    pipe = tmp_path / "pipe.cnn"
    os.mkfifo(pipe)
    (tmp_path / "zero.cnn").write_text('import "/dev/zero"\n' + HEAD + "}\n")
    (tmp_path / "piped.cnn").write_text('import "pipe.cnn"\n' + HEAD + "}\n")
    done = bounded(["check", "/dev/zero", str(pipe), str(tmp_path / "zero.cnn"), str(tmp_path / "piped.cnn"),
                    str(tmp_path)], timeout=30)
    assert_clean_error(done, "/dev/zero: error: this .cnn file is a character device, not a regular file",
                       f"{pipe}: error: this .cnn file is a named pipe, not a regular file",
                       "zero.cnn:1:8: error: cannot import `/dev/zero`: this file is a character device",
                       "piped.cnn:1:8: error: cannot import `pipe.cnn`: this file is a named pipe",
                       f"{tmp_path}: error: this .cnn file is a folder")


def test_a_cnn_file_over_16_mib_is_refused(tmp_path):
    path = tmp_path / "big.cnn"
    path.write_bytes(HEAD.encode() + b"#" * (17 * 2 ** 20) + b"\n}\n")
    with pytest.raises(CnnSpecError, match="this .cnn file is larger than 16 MiB"):
        cnnspec.load(path)


def test_data_and_weights_files_that_are_pipes_are_refused(tmp_path):
    net = tmp_path / "n.cnn"
    net.write_text(HEAD + "    flatten -> dense(2)\n}\n")
    pipe = tmp_path / "data.npz"
    os.mkfifo(pipe)
    folder = tmp_path / "pictures" / "a"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "p.png")
    for args, message in [
        (["train", str(net), "--data", str(pipe), "--out", str(tmp_path / "r")], "this data set file is a named pipe"),
        (["run", str(net), "--weights", str(pipe), "--input", "/dev/zero"], "this weights file is a named pipe"),
        (["run", str(net), "--input", str(pipe.with_suffix(".npy"))], "no such .npy file"),
    ]:
        assert_clean_error(bounded(args, timeout=30), message)
    pictures = tmp_path / "pics.cnn"
    pictures.write_text("network P {\n    input x: 1x8x8\n    flatten -> dense(2)\n}\n")
    assert_clean_error(bounded(["train", str(pictures), "--data", f"folder:{tmp_path / 'pictures'}",
                                "--out", str(tmp_path / "r2")], timeout=30),
                       f"{folder / 'p.png'}: error: this picture is a named pipe")


# -- 6. plans larger than the machine --------------------------------------------------------------

def test_compile_refuses_a_dilation_that_makes_the_padded_input_enormous(tmp_path):
    path = tmp_path / "dil.cnn"
    path.write_text(HEAD + "    conv(1, 3x3, dilation=1000000000, pad=same)\n}\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    done = bounded(["run", str(path), "--input", str(tmp_path / "x.npy")], memory=2 * GiB)
    assert_clean_error(done, "error: not enough memory for `conv1` (kernel 3x3, stride 1x1, pad "
                             "1000000000x1000000000x1000000000x1000000000, dilation 1000000000x1000000000)",
                       "EiB, and this machine has", "hint: the padded input it reads is that large")


def test_training_refuses_a_network_larger_than_the_machine_before_reading_data(tmp_path):
    path = tmp_path / "big.cnn"
    path.write_text("network Big {\n    input x: 3x2000x2000\n    conv(64, 3x3, pad=1) -> relu\n"
                    "    flatten -> dense(10)\n}\ntrain {\n    batch = 64\n}\n")
    done = bounded(["train", str(path), "--out", str(tmp_path / "run")], memory=2 * GiB)
    assert_clean_error(done, "error: not enough memory for training `Big` with a batch of 64 "
                             "(cnnspec summary's training estimate): it needs ", "try a smaller one (--batch)")
    assert "training on" not in done.stdout


def test_the_plan_refuses_activations_larger_than_the_machine(monkeypatch):
    import cnnspec.engine.plan as plan

    net = cnnspec.loads("network N {\n    input x: 3x64x64\n    conv(8, 3x3) -> relu -> flatten -> dense(2)\n}\n")
    model = net.compile()
    monkeypatch.setattr(plan, "available_memory", lambda: 10 * 2 ** 20)       # a machine with 10 MiB
    # input 3x64x64, conv and relu 8x62x62 each, dense 2: 73,794 float32 values per sample
    with pytest.raises(CnnSpecError, match=r"not enough memory for the activations of `N` for a batch of 64: "
                                           r"it needs 18 MiB, and this machine has 10 MiB available") as info:
        model.forward(np.zeros((64, 3, 64, 64), np.float32), batch=64)
    assert "memory grows with the batch (64 here)" in info.value.hint
    model.forward(np.zeros((8, 3, 64, 64), np.float32), batch=8)                # 8 fit


# -- 2 and 7: bombs in data files ------------------------------------------------------------------

def npz_train(tmp_path, name: str, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    net = tmp_path / "n.cnn"
    net.write_text(HEAD + "    flatten -> dense(3)\n}\n")
    return bounded(["train", str(net), "--data", str(path), "--out", str(tmp_path / "run"), "--epochs", "1",
                    "--no-progress"])


def test_one_huge_label_is_refused_with_the_class_bound(tmp_path):
    done = npz_train(tmp_path, "labels.npz", x=np.zeros((4, 1, 8, 8), np.float32),
                     y=np.array([0, 1, 2, 2 ** 63 - 1]))
    assert_clean_error(done, "labels.npz: error: labels run to 9223372036854775807; expected class indexes "
                             "0..K-1 with K <= 1,000,000")


def test_samples_that_are_not_finite_are_refused(tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[2, 0, 3, 4] = np.nan
    x[3] = np.inf
    done = npz_train(tmp_path, "nan.npz", x=x, y=np.array([0, 1, 2, 0]))
    assert_clean_error(done, "nan.npz: error: array 'x' holds values that are not finite numbers "
                             "(1 NaN, 64 infinite; the first at index (2, 0, 3, 4))")
    done = npz_train(tmp_path, "allnan.npz", x=np.full((4, 1, 8, 8), np.nan, np.float32), y=np.array([0, 1, 2, 0]))
    assert_clean_error(done, "allnan.npz: error: array 'x' holds values that are not finite numbers (256 NaN")


def test_an_npz_whose_x_is_a_scalar(tmp_path):
    done = npz_train(tmp_path, "scalar.npz", x=np.float32(3), y=np.array([0]))
    assert_clean_error(done, "scalar.npz: error: array 'x' is a single number: it must hold samples, shape (N, ...)")


BOMB = 640 * 2 ** 20                 # bytes of zeros a bomb unpacks to; the child may use 512 MiB
ZEROS = bytes(2 ** 24)


def test_an_npz_zip_bomb_is_refused_by_its_headers(tmp_path):
    """640 MiB of zeros in a 3 MB archive."""
    path = tmp_path / "bomb.npz"
    n = BOMB // (4 * 8 * 16)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (n, 1, 8, 16)})
            for _ in range(BOMB // len(ZEROS)):
                member.write(ZEROS)
        archive.writestr("y.npy", _npy(np.zeros(n, np.uint8)))
    assert path.stat().st_size < 8 * 2 ** 20
    net = tmp_path / "n.cnn"
    net.write_text("network N {\n    input x: 1x8x16\n    flatten -> dense(3)\n}\n")
    done = bounded(["train", str(net), "--data", str(path), "--out", str(tmp_path / "run")], memory=GiB // 2)
    assert_clean_error(done, "bomb.npz: error: this data set file would take 641 MiB in memory (its arrays' "
                             "headers say so), more than the ", "a decompression bomb")


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_npy_header_that_lies_about_its_size(tmp_path):
    data = bytearray(_npy(np.zeros((1, 8, 8), np.float32)))
    data[:data.index(b"}") + 1] = data[:data.index(b"}") + 1].replace(b"(1, 8, 8)", b"(99999999999, 8, 8)")
    path = tmp_path / "x.npy"
    path.write_bytes(bytes(data))
    net = tmp_path / "n.cnn"
    net.write_text(HEAD + "    flatten -> dense(3)\n}\n")
    done = bounded(["run", str(net), "--input", str(path)])
    assert_clean_error(done, "x.npy: error: cannot read this .npy file (corrupt or truncated?): its header announces "
                             "25599999999744 bytes")


def mnist_folder(tmp_path, images: bytes, gz: bool = False, memory=GiB):
    folder = tmp_path / "mnist"
    folder.mkdir()
    labels = b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00"
    for name, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                       ("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        (folder / (name + (".gz" if gz and "images" in name else ""))).write_bytes(data)
    net = tmp_path / "m.cnn"
    net.write_text("network M {\n    input x: 1x28x28\n    flatten -> dense(10)\n}\n")
    return bounded(["train", str(net), "--data", f"mnist:{folder}", "--out", str(tmp_path / "run")], memory=memory)


def test_an_idx_header_whose_size_overflows_64_bits(tmp_path):
    header = b"\x00\x00\x08\x03" + struct.pack(">III", 2 ** 31, 2 ** 31, 4)
    done = mnist_folder(tmp_path, header)
    assert_clean_error(done, "train-images-idx3-ubyte: error: IDX file holds 0 data bytes but its header announces "
                             "shape (2147483648, 2147483648, 4) (18446744073709551616 bytes): truncated")


def test_an_mnist_gzip_bomb_is_decompressed_no_further_than_its_header(tmp_path):
    """The header announces one 28x28 picture, then 640 MiB of zeros follow (3 MB gzipped)."""
    stream = io.BytesIO()
    with gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=1) as packed:
        packed.write(b"\x00\x00\x08\x03" + struct.pack(">III", 1, 28, 28))
        for _ in range(BOMB // len(ZEROS)):
            packed.write(ZEROS)
    done = mnist_folder(tmp_path, stream.getvalue(), gz=True, memory=GiB // 2)
    assert_clean_error(done, "train-images-idx3-ubyte.gz: error: IDX file holds more than 784 data bytes but its "
                             "header announces shape (1, 28, 28) (784 bytes): trailing data")


def cifar_folder(tmp_path, batch: bytes):
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(batch)
    net = tmp_path / "c.cnn"
    net.write_text("network C {\n    input x: 3x32x32\n    flatten -> dense(10)\n}\n")
    return bounded(["train", str(net), "--data", f"cifar10:{folder}", "--out", str(tmp_path / "run")])


def test_a_cifar_pickle_of_shared_nested_lists(tmp_path):
    """19 KB that NumPy would turn into 10 x 1000 x 1000 x 1000 labels (80 GB)."""
    level = [0] * 1000
    for _ in range(2):
        level = [level] * 1000
    batch = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [level] * 10}, protocol=2)
    assert len(batch) < 64 * 1024
    done = cifar_folder(tmp_path, batch)
    assert_clean_error(done, "data_batch_1: error: labels must be whole numbers (class indexes), found a list")


def test_a_cifar_pickle_claiming_2_to_the_62_bytes(tmp_path):
    batch = b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 62) + b"abc."
    done = cifar_folder(tmp_path, batch)
    assert_clean_error(done, "data_batch_1: error: cannot read this CIFAR-10 batch (corrupt, truncated or not plain "
                             "data): expected 4611686018427387904 bytes in a bytes8, but only 4 remain")


def huge_png(path):
    from PIL import Image

    Image.new("1", (20000, 20000)).save(path)          # 400 million pixels: over Pillow's bomb limit


def test_pictures_over_pillows_limit(tmp_path):
    folder = tmp_path / "pictures"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
    huge_png(folder / "a" / "huge.png")
    from PIL import Image

    Image.new("L", (8, 8)).save(folder / "b" / "small.png")
    net = tmp_path / "p.cnn"
    net.write_text("network P {\n    input x: 1x8x8\n    flatten -> dense(2)\n}\n")
    done = bounded(["train", str(net), "--data", f"folder:{folder}", "--out", str(tmp_path / "run")])
    assert_clean_error(done, f"{folder / 'a' / 'huge.png'}: error: this picture is too large to read: Image size "
                             "(400000000 pixels) exceeds limit", "hint: a decompression bomb")
    done = bounded(["run", str(net), "--input", str(folder / "a" / "huge.png")])
    assert_clean_error(done, "huge.png: error: this picture is too large to read")


# -- 8. NaN in kernels, as PyTorch ------------------------------------------------------------------

def with_nan():
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6))
    x[0, 0, 1, 1] = x[1, 2, 0, 0] = np.nan
    x[0, 1, 2, 3], x[1, 0, 5, 5] = np.inf, -np.inf
    return x


def test_relu_of_nan_is_nan_as_in_pytorch():
    torch = pytest.importorskip("torch")
    x = with_nan()
    t = torch.tensor(x, requires_grad=True)
    torch.relu(t).backward(torch.ones_like(t))
    expected, grad = torch.relu(t).detach().numpy(), t.grad.numpy()
    for forward in (api.relu_forward, reference.relu_forward):
        np.testing.assert_array_equal(forward(x), expected)
    for backward in (api.relu_backward, reference.relu_backward):
        np.testing.assert_array_equal(backward(np.ones_like(x), x), grad)
    np.testing.assert_array_equal(api.relu_forward(x.astype(np.float32)), expected.astype(np.float32))


def test_a_network_carries_nan_where_pytorch_does():
    """Every layer's output, NaN where PyTorch's is NaN and equal elsewhere."""
    pytest.importorskip("torch")
    import torch

    from cnnspec.engine.torch_ref import TorchNet

    net = cnnspec.loads(textwrap.dedent("""\
        network N {
            input x: 3x6x6
            a = conv(4, 3x3, pad=1) -> relu -> maxpool(3, stride=2, pad=1)
            b = in_ -> leaky_relu -> avgpool(2) -> tanh
            c = concat(a, b) -> batchnorm -> sigmoid -> maxpool(2)
            d = c -> globalmaxpool
            e = c -> globalavgpool
            add(d, e) -> flatten -> dense(5) -> relu -> dense(3) -> softmax
        }
    """).replace("in_", "x"))
    model = net.compile(dtype="float64", seed=1)
    x = with_nan()
    ours = model.activations(x)
    ref = TorchNet(model)
    values = {model.input_name: torch.from_numpy(x)}
    for name, step in ref.steps:
        values[name] = step([values[i] for i in net.graph.nodes[name]["inputs"]], False)
    assert np.isnan(ours["dense2"]).any() and not np.isnan(ours["conv1"]).all()
    for name, value in ours.items():
        expected = values[name].detach().numpy()
        np.testing.assert_array_equal(np.isnan(value), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(np.nan_to_num(value), np.nan_to_num(expected), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


# -- 13. the layer API refuses what it cannot compute -----------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda x: api.conv2d_forward(x, np.ones((2, 3, 0, 0)), None, 1, 0),
     "conv2d_forward: w has a 0x0 kernel: every kernel size must be >= 1"),
    (lambda x: api.conv1d_forward(x[:, :, 0], np.ones((2, 3, 0)), None, 1, 0),
     "conv1d_forward: w has a 0 kernel"),
    (lambda x: api.conv2d_forward(x, np.ones((2, 3, 3, 3)), None, 1.7, 0),
     "conv2d_forward: stride must be integers, got 1.7"),
    (lambda x: api.conv2d_forward(x, np.ones((2, 3, 3, 3)), None, (1, 1), 0.5),
     "conv2d_forward: pad must be integers, got 0.5"),
    (lambda x: api.maxpool2d_forward(x, 2, (1.5, 2), 0), "maxpool2d_forward: stride must be integers, got (1.5, 2)"),
    (lambda x: api.maxpool2d_forward(x, 2, 2, 2),
     "maxpool2d_forward: pad (2, 2, 2, 2) must be smaller than the kernel (2, 2) on every side"),
    (lambda x: api.maxpool2d_backward(np.ones((2, 3, 4, 4)), x, 3, 1, (0, 3, 0, 0)),
     "maxpool2d_backward: pad (0, 3, 0, 0) must be smaller than the kernel (3, 3)"),
    (lambda x: api.conv2d_forward(x, np.ones((2, 3, 3, 3)), None, 2 ** 40, 0),
     "conv2d_forward: stride values must be at most 2147483647"),
    (lambda x: api.maxpool2d_forward(x, True, 1, 0), "maxpool2d_forward: kernel must be integers, got True"),
])
def test_the_layer_api_names_the_bad_argument(call, message):
    with pytest.raises(ValueError) as info:
        call(np.ones((2, 3, 6, 6)))
    assert str(info.value).startswith(message), str(info.value)


def test_the_layer_api_still_takes_numpy_integers():
    x = np.random.default_rng(0).normal(size=(1, 2, 6, 6))
    a = api.maxpool2d_forward(x, np.array([2, 2]), np.int64(2), (np.int32(0),) * 4)
    np.testing.assert_array_equal(a, reference.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0)))


# -- 11. analysis time grows linearly --------------------------------------------------------------

def test_the_summary_of_20000_block_instances_is_linear(tmp_path):
    """Block totals were summed over every layer once per block instance: minutes here."""
    path = tmp_path / "blocks.cnn"
    path.write_text("block b {\n    conv(4, 3x3, pad=1) -> relu\n}\nnetwork B {\n    input x: 4x8x8\n    b * 20000\n}\n")
    done = bounded(["summary", str(path)], memory=2 * GiB, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(line.split()[:3] == ["b20000", "b()", "[148]"] for line in done.stdout.splitlines())
