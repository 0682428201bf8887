"""The training API: settings, reproducibility, freezing, transfer, checkpoints and resuming."""
import json
import signal

import numpy as np
import pytest

import cnnspec
from cnnspec.errors import CnnSpecError
from cnnspec.train import evaluate, fit, predict, resolve_config
from conftest import MISSING, assert_damages_refused

TINY = """
network Tiny {
    input image: 1x12x12
    conv(4, 3x3) -> relu -> maxpool(2)
    flatten
    dense(16) -> relu -> dropout(0.2)
    dense(3) -> softmax
}
train {
    data      = shapes:plus,x,square,n=96
    optimizer = sgd(lr=0.1, momentum=0.9)
    epochs    = 2
    batch     = 16
    augment   = [flip, shift(1)]
}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return cnnspec.load(path)


def weights(model) -> dict:
    return {key: value.copy() for key, value in model.arrays().items()}


def quiet(*args):
    pass


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


# -- settings -----------------------------------------------------------------------------------

def test_settings_come_from_the_section_and_flags_override(tiny):
    config = resolve_config(tiny)
    assert (config.data, config.epochs, config.batch, config.seed, config.val_split) == \
        ("shapes:plus,x,square,n=96", 2, 16, 0, 0.1)
    assert config.describe_optimizer() == "sgd(lr=0.1, momentum=0.9)"
    assert config.augment == [("flip", ()), ("shift", (1.0,))]
    assert set(config.from_file) == {"data", "optimizer", "epochs", "batch", "augment"}
    config = resolve_config(tiny, epochs=5, lr=0.01, augment=["none"], data="digits")
    assert (config.epochs, config.lr, config.augment, config.data) == (5, 0.01, [], "digits")
    assert config.optimizer_args["momentum"] == 0.9                       # kept: same optimizer
    assert "data" not in config.from_file
    adam = resolve_config(tiny, optimizer="adam")
    assert adam.describe_optimizer() == "adam(lr=0.001)"
    assert resolve_config(tiny, optimizer="adam(lr=0.01, betas=(0.8, 0.9))").optimizer_args["betas"] == (0.8, 0.9)
    assert resolve_config(tiny, unfreeze_after=["3:conv*"]).unfreeze_after == [(3, "conv*")]


def test_defaults_without_a_train_section():
    net = cnnspec.loads("network N {\n input x: 1x8x8\n flatten -> dense(10)\n}\n")
    config = resolve_config(net)
    assert (config.data, config.loss, config.optimizer, config.lr, config.epochs, config.batch,
            config.seed, config.val_split) == ("shapes", "cross_entropy", "sgd", 0.01, 10, 32, 0, 0.1)


@pytest.mark.parametrize("settings, message", [
    ({"optimizer": "adamax"}, "unknown optimizer `adamax`"),
    ({"optimizer": "sgd(lr=0.1, beta=2)"}, "sgd has no argument `beta`"),
    ({"optimizer": "adam", "momentum": 0.9}, "adam has no setting `momentum`"),
    ({"lr": 0.0}, "lr must be a positive finite number"),
    ({"batch": 0}, "batch must be"),
    ({"val_split": 1.5}, "val_split"),
    ({"loss": "hinge"}, "unknown loss"),
    ({"unfreeze_after": ["conv*"]}, "N:GLOB"),
    ({"unfreeze_after": ["x:conv*"]}, "not a whole number"),
    ({"augment": ["spin(3)"]}, "unknown augmentation"),
])
def test_bad_settings(tiny, settings, message):
    with pytest.raises(CnnSpecError, match=message):
        resolve_config(tiny, **settings)


def test_errors_about_the_files_settings_point_at_their_line(tmp_path):
    path = tmp_path / "wrong.cnn"
    path.write_text(TINY.replace("shapes:plus,x,square,n=96", "digits"))
    with pytest.raises(CnnSpecError) as info:
        fit(cnnspec.load(path), echo=quiet, progress=False)
    text = str(info.value)
    assert text.startswith(f"{path}:10:5: error: data set 'digits' has samples of shape 1x8x8")
    assert "data      = digits" in text


# -- training -----------------------------------------------------------------------------------

def test_fit_learns_and_writes_a_run_directory(tiny, tmp_path):
    lines = []
    history = fit(tiny, out=tmp_path / "run", echo=lines.append, progress=False, epochs=3,
                  data="shapes:plus,x,square,n=150")
    assert [row["epoch"] for row in history.rows] == [1, 2, 3]
    assert history.rows[-1]["train_loss"] < history.rows[0]["train_loss"]
    assert lines[0].startswith("Tiny: training on shapes:plus,x,square,n=150: 135 train / 15 val")
    assert lines[-1].startswith("epoch 3/3  train loss") and "val loss" in lines[-1]
    for name in ("weights.npz", "log.csv", "log.json", "curves.png", "checkpoint/state.json"):
        assert (tmp_path / "run" / name).is_file(), name
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["classes"] == ["plus", "x", "square"] and len(log["epochs"]) == 3
    assert (tmp_path / "run" / "log.csv").read_text().splitlines()[0] == \
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,samples_per_s"
    with np.load(tmp_path / "run" / "weights.npz") as saved:
        assert np.array_equal(saved["dense2.weight"], history.model.params["dense2"]["weight"])


def test_same_seed_same_weights_and_log(tiny):
    runs = [fit(tiny, echo=quiet, progress=False) for _ in range(2)]
    a, b = (weights(run.model) for run in runs)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert without_timings(runs[0].rows) == without_timings(runs[1].rows)
    other = fit(tiny, echo=quiet, progress=False, seed=1)
    assert not np.array_equal(weights(other.model)["conv1.weight"], a["conv1.weight"])


def test_frozen_layers_stay_bit_identical(tiny):
    initial = weights(tiny.compile(seed=0))
    history = fit(tiny, echo=quiet, progress=False, freeze=["conv*", "dense1"])
    after = weights(history.model)
    for key in ("conv1.weight", "conv1.bias", "dense1.weight", "dense1.bias"):
        assert np.array_equal(after[key], initial[key]), key
    assert not np.array_equal(after["dense2.weight"], initial["dense2.weight"])


def test_trainable_false_in_the_file_stays_fixed(tmp_path):
    path = tmp_path / "fixed.cnn"
    path.write_text(TINY.replace("conv(4, 3x3)", "conv(4, 3x3, trainable=false)"))
    net = cnnspec.load(path)
    initial = weights(net.compile(seed=0))
    after = weights(fit(net, echo=quiet, progress=False).model)
    assert np.array_equal(after["conv1.weight"], initial["conv1.weight"])
    assert not np.array_equal(after["dense1.weight"], initial["dense1.weight"])


def test_unfreeze_after(tiny):
    initial = weights(tiny.compile(seed=0))
    lines = []
    one = fit(tiny, echo=quiet, progress=False, epochs=1, freeze=["conv*"], unfreeze_after=["1:conv1"])
    two = fit(tiny, echo=lines.append, progress=False, epochs=2, freeze=["conv*"], unfreeze_after=["1:conv1"])
    assert np.array_equal(one.model.params["conv1"]["weight"], initial["conv1.weight"])
    assert not np.array_equal(two.model.params["conv1"]["weight"], initial["conv1.weight"])
    assert "unfreezing conv1 after 1 epoch" in lines


def test_freeze_glob_must_match(tiny):
    with pytest.raises(CnnSpecError, match="--freeze 'conv9' matches no layer"):
        fit(tiny, echo=quiet, progress=False, freeze=["conv9"])


def test_init_reports_loaded_skipped_and_new_layers(tiny, tmp_path):
    source = tiny.compile(seed=7)
    source.save(tmp_path / "base.npz")
    wider = tmp_path / "wider.cnn"
    wider.write_text(TINY.replace("dense(16) -> relu -> dropout(0.2)", "dense(16) -> relu -> dropout(0.2)\n"
                                  "    dense(8) -> relu").replace("dense(3)", "dense(4)"))
    lines = []
    history = fit(cnnspec.load(wider), echo=lines.append, progress=False, epochs=1, freeze=["conv1"],
                  init=str(tmp_path / "base.npz"))
    assert history.init["loaded"] == ["conv1", "dense1"]
    assert [name for name, _ in history.init["skipped"]] == ["dense2"]
    assert history.init["new"] == ["dense3"]
    assert lines[0].startswith(f"--init {tmp_path / 'base.npz'}: loaded 2 layers (conv1, dense1); skipped 1 "
                               "(dense2.weight: shape 16x3 in the file, 16x8 in the network); new 1 (dense3)")
    assert np.array_equal(history.model.params["conv1"]["weight"], source.params["conv1"]["weight"])
    with pytest.raises(CnnSpecError, match="no such weights file"):
        fit(tiny, echo=quiet, progress=False, init=str(tmp_path / "none.npz"))


# -- interrupting and resuming ------------------------------------------------------------------

def interrupt_at(epoch, batch):
    def on_batch(e, b, loss):
        if (e, b) == (epoch, batch):
            signal.raise_signal(signal.SIGINT)          # what Ctrl-C does
    return on_batch


@pytest.mark.parametrize("optimizer", ["sgd(lr=0.1, momentum=0.9)", "adam(lr=0.01)"])
def test_ctrl_c_saves_a_checkpoint_and_resume_reaches_the_same_weights(optimizer, tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY.replace("sgd(lr=0.1, momentum=0.9)", optimizer))
    tiny = cnnspec.load(path)
    straight = fit(tiny, echo=quiet, progress=False, out=tmp_path / "straight", epochs=3)
    lines = []
    stopped = fit(tiny, echo=lines.append, progress=False, out=tmp_path / "run", epochs=3,
                  on_batch=interrupt_at(2, 1))
    assert stopped.interrupted and len(stopped.rows) == 1
    assert lines[-1].startswith("interrupted in epoch 2 after batch 2/6: checkpoint saved")
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (2, 2)
    assert not (tmp_path / "run" / "weights.npz").exists()
    resumed = fit(tiny, echo=lines.append, progress=False, resume=tmp_path / "run")
    assert not resumed.interrupted
    a, b = weights(straight.model), weights(resumed.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert without_timings(resumed.rows) == without_timings(straight.rows)
    assert (tmp_path / "run" / "weights.npz").is_file()


def test_resume_with_more_epochs_and_its_errors(tiny, tmp_path):
    fit(tiny, echo=quiet, progress=False, out=tmp_path / "run", epochs=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(CnnSpecError, match="already trained for 1 epoch: there is nothing to resume") as info:
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run")
    assert "give --epochs N with N > 1" in info.value.hint
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    longer = fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run", epochs=2)
    assert [row["epoch"] for row in longer.rows] == [1, 2]
    with pytest.raises(CnnSpecError, match="only epochs can change"):
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run", lr=0.5)
    with pytest.raises(CnnSpecError, match="no checkpoint here"):
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "nothing")
    other = cnnspec.loads(TINY.replace("Tiny", "Other"))
    with pytest.raises(CnnSpecError, match="network Tiny, not Other"):
        fit(other, echo=quiet, progress=False, resume=tmp_path / "run")


def test_zero_epochs_writes_the_initial_weights_and_resume_goes_on_from_them(tiny, tmp_path):
    """``--epochs 0``: no step, the initial weights written (as the model compiled with the run's
    seed) and a checkpoint that --resume trains on from, as a run of fewer epochs would be (it
    ended in an error about a checkpoint to resume, exit 1, after writing the other files)."""
    history = fit(tiny, echo=quiet, progress=False, out=tmp_path / "run", epochs=0)
    assert history.rows == [] and not history.interrupted
    saved = np.load(tmp_path / "run" / "weights.npz")
    for name, array in history.model.arrays().items():
        assert np.array_equal(saved[name], array)
    with pytest.raises(CnnSpecError, match="already trained for 0 epochs") as info:
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run")
    assert "--epochs 1" in info.value.hint
    longer = fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run", epochs=1)
    fresh = fit(tiny, echo=quiet, progress=False, out=tmp_path / "one", epochs=1)
    assert [row["epoch"] for row in longer.rows] == [1]
    for name, array in fresh.model.arrays().items():
        assert np.array_equal(longer.model.arrays()[name], array)




@pytest.mark.parametrize("where", ["finished", "inside an epoch"])
def test_resume_refuses_a_state_with_a_key_missing_or_damaged(tiny, tmp_path, where):
    """QA defect 4: a checkpoint/state.json without `rng` or `sums` ended --resume in a KeyError
    traceback (only network, epoch, batch, config and rows were checked). Every key a run's
    restore reads is checked now, each with the one error other damage gets, naming the file."""
    run = tmp_path / "run"
    settings = dict(echo=quiet, progress=False, out=run, schedule="step(1, gamma=0.5)", patience=3)
    if where == "finished":
        fit(tiny, epochs=1, **settings)
    else:
        fit(tiny, epochs=2, on_batch=interrupt_at(1, 1), **settings)
    path = run / "checkpoint" / "state.json"
    good = json.loads(path.read_text())
    assert good["batch"] == (0 if where == "finished" else 2)
    damages = [("rng", MISSING), ("sums", MISSING), ("engine_rng", {"bit_generator": "PCG64"}),
               ("engine_rng", "x"), ("tracker", {}), ("tracker", {"quantity": 5}), ("schedule", {}),
               ("config", {"augment": 5}), ("rows", [1]), ("epoch", 0), ("epoch", True), ("batch", -1),
               ("network", MISSING)]
    if where != "finished":            # read only inside an epoch: the epoch's generator and sums
        damages += [("rng", None), ("rng", "x"), ("rng", {**good["rng"], "bit_generator": "MT19937"}),
                    ("sums", None), ("sums", [1, 2]), ("sums", "x"), ("sums", [*good["sums"][:6], "x"]),
                    ("sums", ["x", *good["sums"][1:]])]
    assert_damages_refused(path, good, damages, lambda: fit(tiny, echo=quiet, progress=False, resume=run, epochs=3))
    assert [row["epoch"] for row in fit(tiny, echo=quiet, progress=False, resume=run, epochs=3).rows] == [1, 2, 3]


# -- evaluating and running ---------------------------------------------------------------------

def test_evaluate_counts_a_confusion_matrix(tiny):
    history = fit(tiny, echo=quiet, progress=False, val_split=0.25)
    x, y = history.dataset.split("val")
    result = evaluate(history.model, x, y, history.classes)
    assert result.confusion.shape == (3, 3) and result.n == len(y) == 24
    predicted = history.model.forward(x).argmax(axis=1)
    assert result.accuracy == pytest.approx(np.mean(predicted == y))
    assert sum(row["correct"] for row in result.per_class) == np.trace(result.confusion)
    text = result.report()
    assert "per class:" in text and "confusion matrix (rows: true class" in text and "square" in text


def test_predict_top_classes_and_maps(tiny):
    model = tiny.compile(seed=0)
    x = np.zeros((1, 12, 12), np.float32)
    result = predict(model, x, classes=["plus", "x", "square"], layers=["conv1", "maxpool*"], top=2)
    assert [name for _, name, _ in result.top] == [result.top[0][1], result.top[1][1]] and len(result.top) == 2
    assert result.probabilities and sum(s for *_, s in predict(model, x, top=3).top) == pytest.approx(1, abs=1e-5)
    assert list(result.maps) == ["conv1", "maxpool1"] and result.maps["conv1"].shape == (4, 10, 10)
    with pytest.raises(CnnSpecError, match="--layers 'cnv1' matches no layer") as info:
        predict(model, x, layers=["cnv1"])
    assert "did you mean `conv1`" in str(info.value)


def test_a_vector_trained_with_mse_is_not_a_classifier():
    net = cnnspec.loads("network R {\n input x: 1x4x4\n flatten -> dense(2)\n}\ntrain {\n loss = mse\n}\n")
    result = predict(net.compile(), np.ones((1, 4, 4), np.float32))
    assert result.top is None and result.report().startswith("output (2):")


def test_resume_refuses_an_optimizer_state_that_does_not_fit(tiny, tmp_path):
    from cnnspec.train import checkpoint

    fit(tiny, echo=quiet, progress=False, out=tmp_path / "run", epochs=1)
    folder = tmp_path / "run" / "checkpoint"
    parts, state = checkpoint.load(folder)
    checkpoint.save(folder, {**parts, "optimizer": {"steps": np.int64(3), "buf": np.zeros(5, np.float32)}}, state)
    with pytest.raises(CnnSpecError, match=r"optimizer state 'buf' has shape \(5,\)") as info:
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run", epochs=2)
    assert info.value.file == str(folder)
    checkpoint.save(folder, {**parts, "optimizer": {"steps": np.int64(3), "m": np.zeros(5, np.float32)}}, state)
    with pytest.raises(CnnSpecError, match="not the state of SGD: missing buf; unexpected m"):
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run", epochs=2)
    optimizer = next(folder.glob("optimizer-*.npz"))
    optimizer.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CnnSpecError, match=f"the checkpoint's parts disagree: {optimizer.name} has 14 bytes, the record says"):
        fit(tiny, echo=quiet, progress=False, resume=tmp_path / "run", epochs=2)


ONE_LEFT = """
network Flat {
    input image: 1x6x6
    a = conv(2, 3x3) -> batchnorm -> relu
    flatten -> dense(4) -> batchnorm -> relu -> dense(3) -> softmax
}
train {
    optimizer = sgd(lr=0.1)
    epochs    = 1
    batch     = 8
    val_split = 0
}
"""


def test_a_last_batch_of_one_sample_and_a_flat_batchnorm_is_refused_before_training(tmp_path):
    """17 samples in batches of 8 leave one sample in the last batch, on which PyTorch's
    BatchNorm1d cannot compute batch statistics. The run says so before its first batch, at the
    batch line, with a batch that works (it failed at the end of the first epoch, hinting at
    "a batch of 2 or more"); a batchnorm over maps (several values per channel) trains on it."""
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch = pytest.importorskip("torch")
        torch.nn.BatchNorm1d(4).train()(torch.zeros(1, 4))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((17, 1, 6, 6)).astype(np.float32), y=np.arange(17) % 3)
    path = tmp_path / "flat.cnn"
    path.write_text(ONE_LEFT)
    batches = []
    with pytest.raises(CnnSpecError, match=r"the last batch of every epoch holds one sample \(17 training samples "
                                           r"in batches of 8\), but `batchnorm2` \(batchnorm\)") as info:
        fit(cnnspec.load(path), data=str(tmp_path / "d.npz"), echo=quiet, progress=False,
            on_batch=lambda *a: batches.append(a))
    assert not batches and info.value.line == 10 and info.value.hint == "choose another batch, e.g. 9"
    with pytest.raises(CnnSpecError, match="holds one sample") as info:
        fit(cnnspec.load(path), data=str(tmp_path / "d.npz"), echo=quiet, progress=False, batch=16)
    assert info.value.hint == "choose another batch, e.g. 17"
    history = fit(cnnspec.load(path), data=str(tmp_path / "d.npz"), echo=quiet, progress=False, batch=9)
    assert len(history.rows) == 1
    maps = cnnspec.loads(ONE_LEFT.replace("flatten -> dense(4) -> batchnorm -> relu", "flatten"))
    assert len(fit(maps, data=str(tmp_path / "d.npz"), echo=quiet, progress=False).rows) == 1
