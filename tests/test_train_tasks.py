"""Training beyond classification (dsl.md §10.4): reconstruct (auto-encoders, denoising, VAEs),
segment and gan — their metrics against independent references, a GAN step against a
hand-written PyTorch one, Ctrl-C and --resume bit-identity for each task, losses that go down,
and located errors for data that does not fit."""
import json
import signal

import numpy as np
import pytest

import cnnspec
from cnnspec.errors import CnnSpecError
from cnnspec.train import checkpoint, fit
from cnnspec.train.metrics import iou, mean_iou, pixel_confusion, psnr
from conftest import MISSING, assert_damages_refused

AE = """
network AE {
    input image: 1x12x12
    conv(4, 3x3, stride=2, pad=1) -> relu
    conv_transpose(1, 4x4, stride=2, pad=1) -> sigmoid
}
train {
    data = shapes:n=96
    task = reconstruct
    loss = LOSS
    corrupt = [noise(0.2), mask(0.1)]
    optimizer = adam(lr=0.01)
    epochs = 2
    batch = 16
}
"""

VAE = """
network VAE {
    input image: 1x12x12
    h = flatten -> dense(16) -> relu
    mu = h -> dense(3)
    logvar = h -> dense(3)
    z = sample(mu, logvar)
    dense(144) -> sigmoid -> reshape(1x12x12)
}
train {
    data = shapes:n=96
    task = reconstruct
    loss = bce
    optimizer = adam(lr=0.01)
    epochs = 2
    batch = 16
}
"""

SEG = """
network Seg {
    input image: 1x12x12
    conv(6, 3x3, pad=1) -> batchnorm -> relu
    conv(4, 1x1) -> softmax
}
train {
    data = shapes:plus,x,square,n=96
    task = segment
    optimizer = adam(lr=0.02)
    epochs = 2
    batch = 16
    augment = [flip, shift(1)]
}
"""

GAN = """
network G {
    input z: 4
    input label: 3
    concat(z, label)
    dense(16) -> batchnorm -> relu -> dense(144) -> tanh -> reshape(1x12x12)
}
network D {
    input image: 1x12x12
    input label: 3
    pixels = image -> flatten
    concat(pixels, label)
    dense(16) -> leaky_relu(0.2) -> dropout(0.3) -> dense(1) -> sigmoid
}
train {
    data = shapes:plus,x,square,n=96
    task = gan
    generator = G
    discriminator = D
    g_optimizer = adam(lr=2e-3, betas=(0.5, 0.999))
    d_optimizer = sgd(lr=0.05, momentum=0.5)
    epochs = 2
    batch = 16
}
"""


PACGAN = """
network G {
    input z: 3x1x1
    conv_transpose(4, 2x2, bias=false) -> batchnorm -> relu
    conv_transpose(1, 4x4, stride=2, pad=1, bias=false) -> tanh
}
network D {
    input image: 2x4x4
    conv(3, 4x4, stride=2, pad=1, bias=false) -> batchnorm -> leaky_relu(0.2)
    flatten -> dense(1) -> sigmoid
}
train {
    data = shapes:plus,x,n=15
    task = gan
    generator = G
    discriminator = D
    g_optimizer = adam(lr=0.01, betas=(0.5, 0.999))
    d_optimizer = adam(lr=0.02, betas=(0.5, 0.999))
    batch = 4
    seed = 3
    pack = 2
}
"""


def quiet(*args):
    pass


def load(tmp_path, text, name="net.cnn"):
    path = tmp_path / name
    path.write_text(text)
    return cnnspec.load(path)


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def interrupt_at(epoch, batch):
    def on_batch(e, b, loss):
        if (e, b) == (epoch, batch):
            signal.raise_signal(signal.SIGINT)
    return on_batch


# -- metrics against independent references -----------------------------------------------------

def test_confusion_and_iou_against_a_loop():
    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 4, (5, 6, 7)), rng.integers(0, 4, (5, 6, 7))
    predicted[truth == 3] = 0                           # class 3 never predicted
    truth[truth == 2] = 1
    predicted[predicted == 2] = 1                       # class 2 absent from both
    k = 5                                               # class 4 absent from both too
    expected = np.zeros((k, k), int)
    for t, p in zip(truth.ravel(), predicted.ravel()):
        expected[t, p] += 1
    confusion = pixel_confusion(predicted, truth, k)
    assert np.array_equal(confusion, expected)
    values = []
    for c in range(k):
        inter = np.sum((truth == c) & (predicted == c))
        union = np.sum((truth == c) | (predicted == c))
        values.append(None if union == 0 else inter / union)
    assert iou(confusion) == pytest.approx(values)
    assert values[2] is None and values[4] is None and values[3] == 0
    assert mean_iou(confusion) == pytest.approx(np.mean([v for v in values if v is not None]))


def test_iou_against_torchmetrics_practice():
    """A perfect prediction of two of five classes scores 1: absent classes are left out."""
    truth = np.array([[0, 0, 1, 1]])
    assert mean_iou(pixel_confusion(truth, truth, 5)) == 1.0
    assert mean_iou(pixel_confusion(np.array([[0, 0, 0, 1]]), truth, 5)) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_psnr():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(1e-4) == pytest.approx(40.0)
    assert psnr(0.0) == float("inf")


@pytest.mark.parametrize("loss", ["mse", "l1", "bce", "cross_entropy"])
def test_task_losses_against_pytorch(loss):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    channels = 3 if loss == "cross_entropy" else 1
    final = "softmax" if loss == "cross_entropy" else "sigmoid"
    network = cnnspec.loads(f"network N {{\n input image: 2x5x5\n conv({channels}, 3x3, pad=1) -> {final}\n}}")
    model = network.compile(seed=3, dtype="float64")
    rng = np.random.default_rng(1)
    x = rng.random((4, 2, 5, 5))
    y = rng.integers(0, 3, (4, 5, 5)) if loss == "cross_entropy" else rng.random((4, 1, 5, 5))
    value, grads = model.loss_and_grad(x, y, loss=loss)
    arrays = model.arrays()
    w = torch.tensor(arrays["conv1.weight"], requires_grad=True)
    b = torch.tensor(arrays["conv1.bias"], requires_grad=True)
    scores = F.conv2d(torch.tensor(x), w, b, padding=1)
    target = torch.tensor(y)
    reference = {"mse": lambda: F.mse_loss(torch.sigmoid(scores), target),
                 "l1": lambda: F.l1_loss(torch.sigmoid(scores), target),
                 "bce": lambda: F.binary_cross_entropy_with_logits(scores, target),
                 "cross_entropy": lambda: F.cross_entropy(scores, target)}[loss]()
    reference.backward()
    assert value == pytest.approx(reference.item(), rel=1e-10)
    np.testing.assert_allclose(grads["conv1"]["weight"], w.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(grads["conv1"]["bias"], b.grad.numpy(), rtol=1e-8, atol=1e-12)


# -- the GAN step against PyTorch ---------------------------------------------------------------

GAN_STEP = """
network G {
    input z: 3
    dense(5) -> leaky_relu(0.2) -> dense(4) -> tanh -> reshape(1x2x2)
}
network D {
    input image: 1x2x2
    flatten -> dense(3) -> leaky_relu(0.2) -> dense(1) -> sigmoid
}
train {
    data = shapes:n=8
    task = gan
    generator = G
    discriminator = D
    optimizer = sgd(lr=0.1)
    batch = 4
}
"""


def test_one_gan_step_equals_a_hand_written_pytorch_step(tmp_path):
    """One discriminator step (real -> 1, fake -> 0, gradients added, fakes detached) and one
    generator step (the non-saturating loss through the updated discriminator) give PyTorch's
    gradients and weights."""
    torch = pytest.importorskip("torch")
    from cnnspec.train.config import resolve_config
    from cnnspec.data import Dataset
    from cnnspec.train.gan import GanRun

    networks = cnnspec.load_all(tmp_path / "gan.cnn") if (tmp_path / "gan.cnn").write_text(GAN_STEP) else None
    config = resolve_config(networks["G"])
    rng = np.random.default_rng(0)
    real = rng.random((4, 1, 2, 2)).astype(np.float32)
    data = Dataset("test", [], real, np.zeros(4, np.int64), real[:0], np.zeros(0, np.int64), task="gan")
    run = GanRun(networks["G"], networks["D"], config, data, None, False, quiet, None)
    g0, d0 = {k: v.copy() for k, v in run.g.arrays().items()}, {k: v.copy() for k, v in run.d.arrays().items()}
    z = rng.standard_normal((4, 3)).astype(np.float32)
    fake = run.g.forward_train({"z": z})
    d_loss, d_real, d_fake = run._d_step(run._real_inputs(real, None), fake, None)
    d_grads = {k: v.copy() for k, v in run.d._grads["dense1"].items()}
    g_loss = run._g_step(None)

    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)       # noqa: E731
    G = {k: t(v) for k, v in g0.items()}
    D = {k: t(v) for k, v in d0.items()}
    lrelu = torch.nn.functional.leaky_relu

    def gen(zz):
        h = lrelu(torch.tensor(zz, dtype=torch.float64) @ G["dense1.weight"] + G["dense1.bias"], 0.2)
        return torch.tanh(h @ G["dense2.weight"] + G["dense2.bias"]).reshape(-1, 1, 2, 2)

    def disc(images, params):
        h = lrelu(images.reshape(len(images), -1) @ params["dense1.weight"] + params["dense1.bias"], 0.2)
        return torch.sigmoid(h @ params["dense2.weight"] + params["dense2.bias"])

    bce = torch.nn.functional.binary_cross_entropy
    fake_t = gen(z)
    np.testing.assert_allclose(fake, fake_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    real_t = torch.tensor(real * 2 - 1, dtype=torch.float64)           # tanh: real scaled to [-1, 1]
    out_real, out_fake = disc(real_t, D), disc(fake_t.detach(), D)
    err_real = bce(out_real, torch.ones(4, 1, dtype=torch.float64))
    err_fake = bce(out_fake, torch.zeros(4, 1, dtype=torch.float64))
    err_real.backward()
    err_fake.backward()
    assert d_loss == pytest.approx((err_real + err_fake).item(), rel=1e-5)
    assert (d_real, d_fake) == pytest.approx((out_real.mean().item(), out_fake.mean().item()), rel=1e-5)
    np.testing.assert_allclose(d_grads["weight"], D["dense1.weight"].grad.numpy(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        for p in D.values():
            p -= 0.1 * p.grad
            p.grad = None
    for k, p in D.items():
        np.testing.assert_allclose(run.d.arrays()[k], p.detach().numpy(), rtol=1e-5, atol=1e-6)
    err_g = bce(disc(fake_t, D), torch.ones(4, 1, dtype=torch.float64))    # non-saturating: -log D(G(z))
    err_g.backward()
    assert g_loss == pytest.approx(err_g.item(), rel=1e-5)
    assert all(p.grad is None or True for p in D.values())
    for k, p in G.items():
        np.testing.assert_allclose(run.g._grads[k.split(".")[0]][k.split(".")[1]], p.grad.numpy(),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(run.g.arrays()[k], (p - 0.1 * p.grad).detach().numpy(), rtol=1e-5, atol=1e-6)
    for k, p in D.items():                        # the generator's step leaves D's weights alone
        np.testing.assert_allclose(run.d.arrays()[k], p.detach().numpy(), rtol=1e-5, atol=1e-6)


# -- training, resuming, losses going down ------------------------------------------------------

TASKS = {"reconstruct": AE.replace("LOSS", "bce"), "vae": VAE, "segment": SEG, "gan": GAN,
         "gan_ema": GAN.replace("batch = 16", "batch = 16\n    g_ema = 0.9"),
         "gan_pack": PACGAN.replace("n=15", "n=14").replace("4, 2x2", "4, 4x4").replace("2x4x4", "2x8x8")}


@pytest.mark.parametrize("task", list(TASKS))
def test_ctrl_c_and_resume_reach_the_same_weights(task, tmp_path):
    network = load(tmp_path, TASKS[task])
    straight = fit(network, echo=quiet, progress=False, out=tmp_path / "straight", epochs=3)
    lines = []
    stopped = fit(network, echo=lines.append, progress=False, out=tmp_path / "run", epochs=3,
                  on_batch=interrupt_at(2, 1))
    assert stopped.interrupted and len(stopped.rows) == 1
    assert "checkpoint saved" in lines[-1]
    resumed = fit(network, echo=lines.append, progress=False, resume=tmp_path / "run")
    assert without_timings(resumed.rows) == without_timings(straight.rows)
    models = [(straight.model, resumed.model)]
    if task.startswith("gan"):
        models.append((straight.discriminator, resumed.discriminator))
    for a, b in models:
        a, b = a.arrays(), b.arrays()
        assert all(np.array_equal(a[k], b[k]) for k in a)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"weights.npz", "log.csv", "curves.png"} <= files
    if task == "gan_ema":                   # weights.npz: the averaged generator, not the trained one
        saved = np.load(tmp_path / "run" / "weights.npz")
        assert all(np.array_equal(saved[k], v) for k, v in resumed.model.arrays().items())
        parts, _ = checkpoint.load(tmp_path / "run" / "checkpoint")
        assert "g_ema" in parts and not np.array_equal(saved["dense1.weight"], parts["weights"]["dense1.weight"])
    if task.startswith("gan"):
        assert "discriminator.npz" in files and len(list((tmp_path / "run" / "samples").iterdir())) == 3
    else:
        assert "best.npz" in files and len(list((tmp_path / "run" / "pictures").iterdir())) == 3


@pytest.mark.parametrize("task", ["segment", "gan"])
def test_resume_refuses_a_state_with_a_key_missing_or_damaged(task, tmp_path):
    """QA defect 4, for a task's and a GAN's run: a state.json without a key restore reads
    (`rng`, `sums`, a GAN's `engine_rng`, `d_engine_rng`), or with one damaged, is the clean
    "cannot resume from this checkpoint" error naming the file (was a KeyError traceback)."""
    network = load(tmp_path, TASKS[task])
    run = tmp_path / "run"
    fit(network, echo=quiet, progress=False, out=run, epochs=2, on_batch=interrupt_at(1, 1))
    path = run / "checkpoint" / "state.json"
    good = json.loads(path.read_text())
    assert good["batch"] == 2
    damages = [("rng", MISSING), ("sums", MISSING), ("rng", None), ("rng", "x"), ("sums", None),
               ("sums", good["sums"][:2]), ("rows", [[]])]
    if task == "gan":
        damages += [("engine_rng", MISSING), ("d_engine_rng", MISSING), ("engine_rng", None),
                    ("d_engine_rng", {"bit_generator": "PCG64"}), ("sums", [*good["sums"][:6], "x"])]
    else:                              # the pixel confusion matrix so far
        damages += [("sums", [*good["sums"][:6], {**good["sums"][6], "confusion": [[1, 2], [3]]}]),
                    ("sums", [*good["sums"][:6], {"sse": 0}])]
    assert_damages_refused(path, good, damages, lambda: fit(network, echo=quiet, progress=False, resume=run))
    assert len(fit(network, echo=quiet, progress=False, resume=run).rows) == 2


@pytest.mark.parametrize("loss", ["mse", "l1", "bce"])
def test_reconstruct_learns_and_logs_psnr(loss, tmp_path):
    history = fit(load(tmp_path, AE.replace("LOSS", loss)), echo=quiet, progress=False, epochs=4)
    rows = history.rows
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_psnr"] > rows[0]["val_psnr"]
    assert history.best["monitor"] == "val_psnr"
    # the logged PSNR is 10 log10(1 / MSE) of the clean validation pictures
    run_x = history.dataset.x_val
    from cnnspec.data.augment import Augmenter
    corrupted = Augmenter([("noise", (0.2,)), ("mask", (0.1,))], run_x.shape[1:])(
        run_x, np.random.default_rng([0, 0x7A1]))
    out = history.model.forward(corrupted)
    assert rows[-1]["val_psnr"] == pytest.approx(10 * np.log10(1 / np.mean((out - run_x) ** 2)), rel=1e-5)


def test_vae_logs_reconstruction_and_kl_apart(tmp_path):
    rows = fit(load(tmp_path, VAE), echo=quiet, progress=False, epochs=3).rows
    for row in rows:
        assert row["train_loss"] == pytest.approx(row["train_recon"] + row["train_kl"], rel=1e-9)
        assert row["train_kl"] > 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_segment_learns_and_reports_miou(tmp_path):
    history = fit(load(tmp_path, SEG), echo=quiet, progress=False, epochs=4)
    rows = history.rows
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert history.best["monitor"] == "val_miou"
    x, masks = history.dataset.x_val, history.dataset.y_val
    predicted = history.model.forward(x).argmax(axis=1)
    confusion = pixel_confusion(predicted, masks, 4)
    assert rows[-1]["val_miou"] == pytest.approx(mean_iou(confusion))
    assert rows[-1]["val_acc"] == pytest.approx(np.mean(predicted == masks))


def test_gan_logs_both_losses_and_each_optimizers_lr(tmp_path):
    history = fit(load(tmp_path, GAN), echo=quiet, progress=False, epochs=2, out=tmp_path / "run")
    for row in history.rows:
        assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(row)
        assert 0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1
        assert (row["g_lr"], row["d_lr"]) == (2e-3, 0.05) and "lr" not in row      # not the shared lr
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"g_lr", "d_lr"} <= set(header) and "lr" not in header


# -- errors -------------------------------------------------------------------------------------

def test_masks_of_the_wrong_size(tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    np.savez(tmp_path / "seg.npz", x=x, y=np.zeros((4, 6, 6), np.int64))
    network = load(tmp_path, SEG.replace("1x12x12", "1x8x8").replace("shapes:plus,x,square,n=96", "\"seg.npz\""))
    with pytest.raises(CnnSpecError, match=r"masks of 6x6 pixels, but the network's output is 4x8x8") as info:
        fit(network, echo=quiet, progress=False)
    assert info.value.line is not None                                   # at the data line


def test_labels_instead_of_masks(tmp_path):
    np.savez(tmp_path / "seg.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    network = load(tmp_path, SEG.replace("1x12x12", "1x8x8").replace("shapes:plus,x,square,n=96", "\"seg.npz\""))
    with pytest.raises(CnnSpecError, match=r"segmentation needs one mask of class indexes per sample"):
        fit(network, echo=quiet, progress=False)


def test_reconstruct_output_must_match_the_input(tmp_path):
    network = load(tmp_path, AE.replace("LOSS", "mse").replace("conv_transpose(1, 4x4", "conv_transpose(2, 4x4"))
    with pytest.raises(CnnSpecError, match="the output is 2x12x12, the input 1x12x12") as info:
        fit(network, echo=quiet, progress=False)
    assert info.value.line is not None


def test_missing_generator_network(tmp_path):
    with pytest.raises(CnnSpecError, match=r"no network `Gen` in this file") as info:
        load(tmp_path, GAN.replace("generator = G", "generator = Gen"))
    assert info.value.line == 18
    with pytest.raises(CnnSpecError, match=r"generator") as info:
        load(tmp_path, GAN.replace("    generator = G\n", ""))
    # given only one of the file's networks (the API), the other is named as missing
    networks = cnnspec.load_all(tmp_path / "net.cnn") if (tmp_path / "net.cnn").write_text(GAN) else None
    with pytest.raises(CnnSpecError, match=r"no network `D` in this file \(the discriminator\)"):
        fit(networks["G"], networks={"G": networks["G"]}, echo=quiet, progress=False)


@pytest.mark.parametrize("line, key", [("schedule = cosine", "schedule"), ("warmup = 1", "warmup"),
                                       ("augment = [flip]", "augment")])
def test_settings_the_gan_trainer_does_not_apply_are_errors(tmp_path, line, key):
    """A GAN trains at its optimizers' fixed rates on the real pictures as they are: a schedule, a
    warm-up or augmentation would be silently ignored, so each is an error at its line (and as an
    override of fit)."""
    with pytest.raises(CnnSpecError, match=f"`{key}` is not a setting of `task = gan`") as info:
        load(tmp_path, GAN.replace("    batch = 16\n", f"    batch = 16\n    {line}\n"))
    assert info.value.line == 24
    value = {"schedule": "cosine", "warmup": 1, "augment": ["flip"]}[key]
    with pytest.raises(CnnSpecError, match=f"`{key}` is not a setting of `task = gan`"):
        fit(load(tmp_path, GAN), echo=quiet, progress=False, **{key: value})


def test_wrong_loss_for_a_task(tmp_path):
    with pytest.raises(CnnSpecError, match="does not train `task = segment`"):
        cnnspec.load(tmp_path / "x.cnn") if (tmp_path / "x.cnn").write_text(
            SEG.replace("task = segment", "task = segment\n    loss = mse")) else None


def test_conditional_gan_needs_labels_on_both(tmp_path):
    text = GAN.replace("    input label: 3\n    pixels = image -> flatten\n    concat(pixels, label)\n",
                       "    flatten\n")
    with pytest.raises(CnnSpecError, match="only the generator has `input label`"):
        fit(load(tmp_path, text), echo=quiet, progress=False)


# -- generate -----------------------------------------------------------------------------------

def test_generate_from_a_vae_decoder_by_hand(tmp_path):
    """Samples come from the layers after `sample` fed with z ~ N(0, I): here sigmoid(z W + b)."""
    from cnnspec.train import generate

    network = load(tmp_path, VAE)
    model = network.compile(seed=4)
    pictures = generate(network, n=5, seed=7, model=model)
    z = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    decoder = next(name for name, group in model.params.items() if group.get("weight", np.zeros(0)).shape == (3, 144))
    w, b = model.params[decoder]["weight"], model.params[decoder]["bias"]
    expected = 1 / (1 + np.exp(-(z.astype(np.float64) @ w + b)))
    np.testing.assert_allclose(pictures.reshape(5, -1), expected, rtol=1e-5, atol=1e-6)
    walk = generate(network, n=6, seed=1, model=model, interpolate=True)
    logits = np.log(walk / (1 - walk)).reshape(6, -1).astype(np.float64)
    np.testing.assert_allclose(np.diff(logits, 2, axis=0), 0, atol=2e-3)      # a straight line in z
    assert np.abs(logits[-1] - logits[0]).max() > 0.1


def test_generate_command(tmp_path, capsys):
    from cnnspec.cli import main

    path = tmp_path / "gan.cnn"
    path.write_text(GAN)
    networks = cnnspec.load_all(path)
    run = fit(networks["G"], echo=quiet, progress=False, out=tmp_path / "run", epochs=1)
    assert main(["generate", str(path), "--weights", str(tmp_path / "run"), "-n", "6", "--label", "2",
                 "-o", str(tmp_path / "grid.png"), "--npz", str(tmp_path / "x.npz")]) == 0
    x = np.load(tmp_path / "x.npz")["x"]
    assert x.shape == (6, 1, 12, 12) and 0 <= x.min() and x.max() <= 1
    labels = np.zeros((6, 3), np.float32)
    labels[:, 2] = 1
    z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    expected = (run.model.forward({"z": z, "label": labels}) + 1) / 2            # tanh back to [0, 1]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)
    from PIL import Image
    assert Image.open(tmp_path / "grid.png").size[0] > 0
    capsys.readouterr()
    assert main(["generate", str(path), "--weights", str(tmp_path / "run"), "--label", "3", "-o",
                 str(tmp_path / "g.png")]) == 1
    assert "--label 3: the generator's labels are 0..2" in capsys.readouterr().err
    ae = tmp_path / "ae.cnn"
    ae.write_text(AE.replace("LOSS", "mse"))
    assert main(["generate", str(ae), "--weights", str(tmp_path / "run" / "weights.npz"), "-o", "x.png"]) == 1
    assert "generates nothing" in capsys.readouterr().err


def test_evaluate_and_run_commands_for_the_tasks(tmp_path, capsys):
    from cnnspec.cli import main

    seg = tmp_path / "seg.cnn"
    seg.write_text(SEG)
    fit(cnnspec.load(seg), echo=quiet, progress=False, out=tmp_path / "seg", epochs=1)
    assert main(["evaluate", str(seg), "--weights", str(tmp_path / "seg"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "segment" and result["classes"][0] == "background"
    confusion = np.array(result["confusion"])
    assert result["mean_iou"] == pytest.approx(mean_iou(confusion))
    assert confusion.sum() == result["pixels"] == 10 * 12 * 12                     # the val split's pixels
    picture = tmp_path / "one.npy"
    np.save(picture, np.zeros((1, 12, 12), np.float32))
    assert main(["run", str(seg), "--weights", str(tmp_path / "seg"), "--input", str(picture),
                 "--picture", str(tmp_path / "mask.png")]) == 0
    assert "mask (12x12 pixels)" in capsys.readouterr().out and (tmp_path / "mask.png").is_file()
    ae = tmp_path / "ae.cnn"
    ae.write_text(AE.replace("LOSS", "mse"))
    fit(cnnspec.load(ae), echo=quiet, progress=False, out=tmp_path / "ae", epochs=1)
    assert main(["evaluate", str(ae), "--weights", str(tmp_path / "ae"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["psnr"] == pytest.approx(10 * np.log10(1 / result["mse"]))
    assert result["input_psnr"] is not None


@pytest.mark.parametrize("task", ["reconstruct", "gan"])
def test_a_loss_that_stops_being_finite_ends_the_run_with_a_message(task, tmp_path):
    text = TASKS[task]
    text = text.replace("adam(lr=0.01)", "sgd(lr=1e30)").replace("adam(lr=2e-3, betas=(0.5, 0.999))", "sgd(lr=1e30)")
    text = text.replace("sgd(lr=0.05, momentum=0.5)", "sgd(lr=1e30)")     # a GAN's G saturates in tanh: D too
    with pytest.raises(CnnSpecError, match=r"training diverged: .*loss became nan in epoch 1, batch \d+/6"):
        fit(load(tmp_path, text), echo=quiet, progress=False, out=tmp_path / "run")


def test_a_gan_run_in_an_earlier_runs_folder_names_only_its_own_checkpoint(tmp_path):
    """QA defect 3, for a GAN: a new run that diverged before saving said "the last checkpoint is
    kept" of the earlier run's; --epochs 0 marked the earlier run's checkpoint finished (in an
    empty folder it failed: no checkpoint to mark)."""
    net = load(tmp_path, TASKS["gan"])
    out = tmp_path / "run"
    fit(net, echo=quiet, progress=False, out=out, epochs=1)
    earlier = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    diverging = load(tmp_path, TASKS["gan"].replace("sgd(lr=0.05, momentum=0.5)", "sgd(lr=1e30)"), "nan.cnn")
    with pytest.raises(CnnSpecError, match=r"in epoch 1, batch \d+/6; nothing of this run was saved "
                                           rf"\({out} holds an earlier run's files, untouched\)"):
        fit(diverging, echo=quiet, progress=False, out=out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == earlier
    for folder in (out, tmp_path / "empty"):
        fit(net, echo=quiet, progress=False, out=folder, epochs=0)
        state = json.loads((folder / "checkpoint" / "state.json").read_text())
        assert (state["epoch"], state["rows"], state["finished"]) == (1, [], True)
    assert len(fit(net, echo=quiet, progress=False, resume=out, epochs=1).rows) == 1


def test_three_gan_iterations_with_adam_equal_pytorch(tmp_path):
    """Gradients are not carried from one step to the next, and each network's Adam keeps its own
    state: three iterations of both steps end at PyTorch's weights."""
    torch = pytest.importorskip("torch")
    from cnnspec.data import Dataset
    from cnnspec.train.config import resolve_config
    from cnnspec.train.gan import GanRun

    (tmp_path / "gan.cnn").write_text(GAN_STEP.replace("optimizer = sgd(lr=0.1)",
                                                       "g_optimizer = adam(lr=0.01)\n    d_optimizer = adam(lr=0.02)"))
    networks = cnnspec.load_all(tmp_path / "gan.cnn")
    config = resolve_config(networks["G"])
    rng = np.random.default_rng(1)
    real = rng.random((3, 4, 1, 2, 2)).astype(np.float32)
    data = Dataset("test", [], real[0], np.zeros(4, np.int64), real[0][:0], np.zeros(0, np.int64), task="gan")
    run = GanRun(networks["G"], networks["D"], config, data, None, False, quiet, None)
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)       # noqa: E731
    G = {k: t(v) for k, v in run.g.arrays().items()}
    D = {k: t(v) for k, v in run.d.arrays().items()}
    opt_g, opt_d = torch.optim.Adam(G.values(), lr=0.01), torch.optim.Adam(D.values(), lr=0.02)
    lrelu, bce = torch.nn.functional.leaky_relu, torch.nn.functional.binary_cross_entropy

    def mlp(x, params, last):
        h = lrelu(x.reshape(len(x), -1) @ params["dense1.weight"] + params["dense1.bias"], 0.2)
        return last(h @ params["dense2.weight"] + params["dense2.bias"])

    ones, zeros = torch.ones(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    for step in range(3):
        z = rng.standard_normal((4, 3)).astype(np.float32)
        fake = run.g.forward_train({"z": z})
        run._d_step(run._real_inputs(real[step], None), fake, None)
        run._g_step(None)
        fake_t = mlp(torch.tensor(z, dtype=torch.float64), G, torch.tanh)
        opt_d.zero_grad()
        (bce(mlp(torch.tensor(real[step] * 2 - 1, dtype=torch.float64), D, torch.sigmoid), ones)
         + bce(mlp(fake_t.detach(), D, torch.sigmoid), zeros)).backward()
        opt_d.step()
        opt_g.zero_grad()
        bce(mlp(fake_t, D, torch.sigmoid), ones).backward()
        opt_g.step()
    for model, params in ((run.g, G), (run.d, D)):
        for k, p in params.items():
            np.testing.assert_allclose(model.arrays()[k], p.detach().numpy(), rtol=1e-4, atol=1e-5)


CGAN_STEP = """
network G {
    input z: 3x1x1
    input label: 2
    code = label -> reshape(2x1x1)
    concat(z, code)
    conv_transpose(4, 2x2, bias=false) -> batchnorm -> relu
    conv_transpose(1, 4x4, stride=2, pad=1, bias=false) -> tanh
}
network D {
    input image: 1x4x4
    input label: 2
    maps = label -> reshape(2x1x1) -> upsample(4)
    concat(image, maps)
    conv(3, 4x4, stride=2, pad=1, bias=false) -> batchnorm -> leaky_relu(0.2)
    flatten -> dense(1) -> sigmoid
}
train {
    data = shapes:plus,x,n=12
    task = gan
    generator = G
    discriminator = D
    g_optimizer = adam(lr=0.01, betas=(0.5, 0.999))
    d_optimizer = adam(lr=0.02, betas=(0.5, 0.999))
    batch = 4
    d_steps = D_STEPS
    seed = 3
    G_EMA
}
"""


def test_a_packed_gan_epoch_equals_pytorch(tmp_path):
    """PacGAN (Lin et al. 2018), ``pack = 2``: the discriminator judges pairs of pictures stacked on
    the channel axis (pictures 2i and 2i+1 of the batch, real with real and fake with fake; its
    batchnorm over the packs), the generator's gradient flowing back to both pictures of a pair.
    A whole epoch of 15 pictures in batches of 4 against PyTorch (float64): the last batch of 3
    keeps one pack of 2 (and draws noise for 2)."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from cnnspec.data import Dataset
    from cnnspec.train.config import resolve_config
    from cnnspec.train.gan import GanRun

    F = torch.nn.functional
    (tmp_path / "gan.cnn").write_text(PACGAN)
    networks = cnnspec.load_all(tmp_path / "gan.cnn")
    config = resolve_config(networks["G"])
    assert config.pack == 2
    rng = np.random.default_rng(5)
    real = rng.random((15, 1, 4, 4)).astype(np.float32)
    y = np.zeros(15, np.int64)
    data = Dataset("test", [], real, y, real[:0], y[:0], task="gan")
    run = GanRun(networks["G"], networks["D"], config, data, None, False, quiet, None)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)           # noqa: E731
    G = {k: t(v).requires_grad_(not k.endswith(("running_mean", "running_var"))) for k, v in run.g.arrays().items()}
    D = {k: t(v).requires_grad_(not k.endswith(("running_mean", "running_var"))) for k, v in run.d.arrays().items()}
    opt_g = torch.optim.Adam([p for p in G.values() if p.requires_grad], lr=0.01, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([p for p in D.values() if p.requires_grad], lr=0.02, betas=(0.5, 0.999))

    def bn(h, p, name):
        return F.batch_norm(h, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"],
                            p[f"{name}.bias"], training=True, momentum=0.1, eps=1e-5)

    def gen(z):
        h = F.relu(bn(F.conv_transpose2d(z, G["conv_transpose1.weight"]), G, "batchnorm1"))
        return torch.tanh(F.conv_transpose2d(h, G["conv_transpose2.weight"], stride=2, padding=1))

    def disc(images):
        pairs = torch.cat([images[0::2], images[1::2]], dim=1)          # pack i: pictures 2i and 2i+1
        h = F.leaky_relu(bn(F.conv2d(pairs, D["conv1.weight"], stride=2, padding=1), D, "batchnorm1"), 0.2)
        return torch.sigmoid(h.flatten(1) @ D["dense1.weight"] + D["dense1.bias"])

    draw = np.random.default_rng([config.seed, 1])
    order = draw.permutation(15)
    expected_d, expected_g = [], []
    for b in range(4):
        index = order[4 * b:4 * b + 4][:2 if b == 3 else 4]
        z = draw.standard_normal((len(index), 3, 1, 1)).astype(np.float32)
        fake = gen(t(z))
        opt_d.zero_grad()
        out_real, out_fake = disc(t(real[index] * 2 - 1)), disc(fake.detach())
        assert out_real.shape == (len(index) // 2, 1)
        err_real = F.binary_cross_entropy(out_real, torch.ones_like(out_real))
        err_fake = F.binary_cross_entropy(out_fake, torch.zeros_like(out_fake))
        (err_real + err_fake).backward()
        opt_d.step()
        expected_d.append(((err_real + err_fake).item(), len(index)))
        opt_g.zero_grad()
        out = disc(fake)
        err_g = F.binary_cross_entropy(out, torch.ones_like(out))
        err_g.backward()
        opt_g.step()
        expected_g.append(err_g.item())

    assert run.train_epoch(SimpleNamespace(requested=False))
    row = run.history.rows[-1]
    assert row["d_loss"] == pytest.approx(sum(v * n for v, n in expected_d) / 14, rel=1e-4)
    assert row["g_loss"] == pytest.approx(np.mean(expected_g), rel=1e-4)
    for model, params in ((run.g, G), (run.d, D)):
        for k, p in params.items():
            np.testing.assert_allclose(model.arrays()[k], p.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("change, message, line", [
    ("input image: 2x4x4|input image: 1x4x4", r"pack = 2: the discriminator judges 2 pictures stacked on the "
     r"channel axis, so it must take 2x4x4: 2 x 1 channels; it takes 1x4x4", 21),
    ("batch = 4|batch = 5", r"pack = 2: the batch \(5\) must be a whole number of packs of 2", 21),
    ("pack = 2|pack = 0", "pack must be at least 1, got 0", 21),
    ("pack = 2|pack = 1.5", "pack must be an integer, got 1.5", 21),
    ("task = gan|task = reconstruct", r"`generator` is a setting of `task = gan`", 15)])
def test_bad_pack_settings_are_errors_at_their_line(tmp_path, change, message, line):
    old, new = change.split("|")
    with pytest.raises(CnnSpecError, match=message) as info:
        fit(load(tmp_path, PACGAN.replace(old, new)), echo=quiet, progress=False)
    assert info.value.line == line


def test_pack_needs_one_whole_pack_of_training_pictures(tmp_path):
    from cnnspec.data import Dataset

    real = np.zeros((1, 1, 4, 4), np.float32)
    data = Dataset("one.npz", [], real, np.zeros(1, np.int64), real[:0], np.zeros(0, np.int64), task="gan")
    with pytest.raises(CnnSpecError, match=r"pack = 2, but the data set 'one.npz' has only 1 training picture") as info:
        fit(load(tmp_path, PACGAN), dataset=data, echo=quiet, progress=False)
    assert info.value.line == 21


def test_a_last_batch_of_one_pack_and_a_flat_batchnorm_is_refused_before_training(tmp_path):
    """15 pictures in batches of 4 end in 3, of which one pack of 2 is judged: one sample for a
    batchnorm over the discriminator's features, which PyTorch refuses in training (Expected more
    than 1 value per channel). The run says so before its first batch, at the batch line (it
    failed at the end of the first epoch); 13 pictures end in a batch that fills no pack, skipped."""
    from cnnspec.data import Dataset

    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(2).train()(torch.zeros(1, 2))
    text = PACGAN.replace("flatten -> dense(1) -> sigmoid", "flatten -> dense(2) -> batchnorm -> relu -> dense(1) -> sigmoid")

    def pictures(n):
        real = np.random.default_rng(0).random((n, 1, 4, 4)).astype(np.float32)
        return Dataset("real.npz", [], real, np.zeros(n, np.int64), real[:0], np.zeros(0, np.int64), task="gan")
    batches = []
    with pytest.raises(CnnSpecError, match=r"the last batch of every epoch holds one pack of 2 pictures \(15 training "
                                           r"samples in batches of 4\), but `batchnorm2` \(batchnorm\) of `D`") as info:
        fit(load(tmp_path, text), dataset=pictures(15), echo=quiet, progress=False, on_batch=lambda *a: batches.append(a))
    assert not batches and info.value.line == 19 and info.value.hint == "choose another batch, e.g. 2"
    history = fit(load(tmp_path, text), dataset=pictures(13), echo=quiet, progress=False, epochs=1)
    assert len(history.rows) == 1


@pytest.mark.parametrize("loss, steps", [("bce", "noise(0.1)"), ("bce", "flip, noise(0.05)")])
def test_noise_augmenting_a_bce_reconstruction_is_an_error_at_the_augment_line(tmp_path, loss, steps):
    """The target of a reconstruction is its augmented input: noise would take it out of [0, 1],
    which bce refuses (as PyTorch's binary_cross_entropy does) — at the first batch, without a
    line; said at the augment line before training, with corrupt (the input only) as the hint."""
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        torch.nn.functional.binary_cross_entropy(torch.full((2,), 0.5), torch.tensor([-0.1, 0.5]))
    text = TASKS["reconstruct"].replace("    batch = 16\n", f"    batch = 16\n    augment = [{steps}]\n")
    with pytest.raises(CnnSpecError, match=r"`noise` in `augment` noises the target of a reconstruction too") as info:
        fit(load(tmp_path, text), echo=quiet, progress=False)
    assert info.value.line == text.splitlines().index(f"    augment = [{steps}]") + 1
    assert "corrupt = [noise(0.3)]" in info.value.hint
    history = fit(load(tmp_path, text.replace("loss = bce", "loss = mse")), echo=quiet, progress=False, epochs=1)
    assert len(history.rows) == 1


def test_pack_with_a_conditional_gan_is_an_error(tmp_path):
    text = GAN.replace("    batch = 16\n", "    batch = 16\n    pack = 2\n")
    with pytest.raises(CnnSpecError, match="pack is for an unconditional GAN") as info:
        fit(load(tmp_path, text), echo=quiet, progress=False)
    assert info.value.line == 24


@pytest.mark.parametrize("d_steps, g_ema", [(1, None), (2, None), (1, 0.9)])
def test_a_conditional_gan_epoch_with_batchnorm_equals_pytorch(tmp_path, d_steps, g_ema):
    """A whole epoch of a conditional convolutional GAN against PyTorch (float64): fake labels
    drawn per batch and the SAME labels given to G and to D (in both steps), the real pictures with
    their own labels, batchnorm on batch statistics in training (D's real and fake batches apart,
    as in PyTorch's DCGAN tutorial) with running statistics updated by each training forward,
    ``d_steps``, and one Adam per network: weights, running statistics and logged losses. With
    ``g_ema``, the generator that samples holds torch's exponential moving average of the weights
    (swa_utils' ema function, after each generator step) and batchnorm statistics recomputed as
    ``update_bn`` does, over the trainer's fixed noise (1,024 vectors in batches of 4)."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from cnnspec.data import Dataset
    from cnnspec.train.config import resolve_config
    from cnnspec.train.gan import GanRun

    F = torch.nn.functional
    (tmp_path / "gan.cnn").write_text(CGAN_STEP.replace("D_STEPS", str(d_steps))
                                      .replace("G_EMA", f"g_ema = {g_ema}" if g_ema else ""))
    networks = cnnspec.load_all(tmp_path / "gan.cnn")
    config = resolve_config(networks["G"])
    rng = np.random.default_rng(7)
    real = rng.random((12, 1, 4, 4)).astype(np.float32)
    y = np.arange(12) % 2
    data = Dataset("test", ["plus", "x"], real, y, real[:0], y[:0], task="gan")
    run = GanRun(networks["G"], networks["D"], config, data, None, False, quiet, None)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)           # noqa: E731
    G = {k: t(v).requires_grad_(not k.endswith(("running_mean", "running_var"))) for k, v in run.g.arrays().items()}
    D = {k: t(v).requires_grad_(not k.endswith(("running_mean", "running_var"))) for k, v in run.d.arrays().items()}
    opt_g = torch.optim.Adam([p for p in G.values() if p.requires_grad], lr=0.01, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([p for p in D.values() if p.requires_grad], lr=0.02, betas=(0.5, 0.999))

    def bn(h, p, name, momentum=0.1):
        return F.batch_norm(h, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"],
                            p[f"{name}.bias"], training=True, momentum=momentum, eps=1e-5)

    def gen(z, onehot, G=G, momentum=0.1):
        h = torch.cat([z, onehot.reshape(-1, 2, 1, 1)], dim=1)
        h = F.relu(bn(F.conv_transpose2d(h, G["conv_transpose1.weight"]), G, "batchnorm1", momentum))
        return torch.tanh(F.conv_transpose2d(h, G["conv_transpose2.weight"], stride=2, padding=1))

    def disc(images, onehot):
        maps = onehot.reshape(-1, 2, 1, 1).expand(-1, 2, 4, 4)
        h = F.conv2d(torch.cat([images, maps], dim=1), D["conv1.weight"], stride=2, padding=1)
        h = F.leaky_relu(bn(h, D, "batchnorm1"), 0.2).flatten(1)
        return torch.sigmoid(h @ D["dense1.weight"] + D["dense1.bias"])

    # the epoch's generator as the trainer draws from it: the order, then per batch z and labels
    draw = np.random.default_rng([config.seed, 1])
    order = draw.permutation(12)
    expected_d, expected_g, drawn = [], [], []
    trained = [p for p in G.values() if p.requires_grad]
    ema, averaged = [p.detach().clone() for p in trained], 0
    average = g_ema and torch.optim.swa_utils.get_ema_multi_avg_fn(g_ema)
    for b in range(3):
        index = order[4 * b:4 * b + 4]
        z = draw.standard_normal((4, 3, 1, 1)).astype(np.float32)
        labels = draw.integers(0, 2, 4)
        drawn.extend(labels)
        fake_labels, real_labels = t(np.eye(2)[labels]), t(np.eye(2)[y[index]])
        fake = gen(t(z), fake_labels)
        opt_d.zero_grad()
        out_real, out_fake = disc(t(real[index] * 2 - 1), real_labels), disc(fake.detach(), fake_labels)
        err_real = F.binary_cross_entropy(out_real, torch.ones_like(out_real))
        err_fake = F.binary_cross_entropy(out_fake, torch.zeros_like(out_fake))
        err_real.backward()
        err_fake.backward()
        opt_d.step()
        expected_d.append((err_real + err_fake).item())
        if (b + 1) % d_steps == 0:
            opt_g.zero_grad()
            out = disc(fake, fake_labels)                 # through the updated D; the same labels
            err_g = F.binary_cross_entropy(out, torch.ones_like(out))
            err_g.backward()
            opt_g.step()
            expected_g.append(err_g.item())
            if g_ema:                  # AveragedModel.update_parameters: the first update copies
                with torch.no_grad():
                    if averaged == 0:
                        ema = [p.detach().clone() for p in trained]
                    else:
                        average(ema, [p.detach() for p in trained], averaged)
                averaged += 1
    assert 0 < sum(drawn) < len(drawn)                    # both labels drawn for fakes

    assert run.train_epoch(SimpleNamespace(requested=False))
    row = run.history.rows[-1]
    assert row["d_loss"] == pytest.approx(np.mean(expected_d), rel=1e-4)
    assert row["g_loss"] == pytest.approx(np.mean(expected_g), rel=1e-4)
    assert (row["g_lr"], row["d_lr"]) == (0.01, 0.02) and "lr" not in row       # each optimizer's own
    for model, params in ((run.g, G), (run.d, D)):
        for k, p in params.items():
            np.testing.assert_allclose(model.arrays()[k], p.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    if not g_ema:
        assert run.sampler() is run.g
        return
    # the sampling generator: the averaged weights, then update_bn over the fixed noise (momentum
    # None: the cumulative average of the batches' statistics, from reset buffers)
    avg = dict(zip([k for k, p in G.items() if p.requires_grad], ema))
    channels = len(G["batchnorm1.running_mean"])
    avg.update({"batchnorm1.running_mean": torch.zeros(channels, dtype=torch.float64),
                "batchnorm1.running_var": torch.ones(channels, dtype=torch.float64)})
    noise = np.random.default_rng([config.seed, 0xB4])
    with torch.no_grad():
        for i in range(1024 // 4):
            z = noise.standard_normal((4, 3, 1, 1)).astype(np.float32)
            gen(t(z), t(np.eye(2)[noise.integers(0, 2, 4)]), avg, momentum=1 / (i + 1))
    sampler = run.sampler()
    assert sampler is not run.g
    for k, p in avg.items():
        np.testing.assert_allclose(sampler.arrays()[k], p.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    assert not np.allclose(sampler.arrays()["conv_transpose1.weight"], run.g.arrays()["conv_transpose1.weight"],
                           rtol=1e-3, atol=1e-4)                    # the average is not the last weights


def test_check_reads_a_gan_files_data_against_the_pictures(tmp_path, capsys):
    """The data of task = gan are the generator's outputs and the discriminator's image input, not
    the noise: `cnnspec check` of a GAN on shapes is ok for both networks."""
    from cnnspec.cli import main

    path = tmp_path / "gan.cnn"
    path.write_text(GAN)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.count(": ok (") == 2
    path.write_text(GAN.replace("reshape(1x12x12)", "reshape(1x4x36)").replace("1x12x12", "1x4x36"))
    assert main(["check", str(path)]) == 1
    assert "pictures CxHxW of at least 8x8; the network's input is 1x4x36" in capsys.readouterr().err
