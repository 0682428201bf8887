"""Training as Keras and PyTorch users expect it: best.npz, early stopping, schedules, AdamW,
gradient clipping and top-k accuracy, as train-section keys, flags and Python arguments; their
located errors; and their state across Ctrl-C and --resume."""
import json

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.engine.model import Model
from cnnspec.errors import CnnSpecError
from cnnspec.train import fit, resolve_config
from cnnspec.train.callbacks import Tracker, top_k_correct
from test_train import TINY, interrupt_at, quiet, tiny, weights, without_timings   # noqa: F401 (tiny: a fixture)

# lr 0.1 on 150 samples: val_loss is lowest at epoch 4 of 6 and rises after (val_acc 80% at epoch
# 4, 67% at the end): the case where the last weights are not the best ones.
OVERSHOOT = dict(epochs=6, data="shapes:plus,x,square,n=150")
SIX = TINY.replace("dense(3)", "dense(6)").replace("shapes:plus,x,square,n=96",
                                                  "shapes:plus,x,square,hbar,vbar,circle,n=120")


def npz(path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- best.npz -----------------------------------------------------------------------------------

def test_best_npz_holds_the_weights_of_the_best_epoch(tiny, tmp_path):
    history = fit(tiny, out=tmp_path / "run", echo=quiet, progress=False, **OVERSHOOT)
    losses = [row["val_loss"] for row in history.rows]
    best = int(np.argmin(losses)) + 1
    assert best < len(losses), "the curve must end above its best for this test to mean anything"
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["best"] == {"monitor": "val_loss", "value": losses[best - 1], "epoch": best, "stopped_early": None}
    # the same seed trained for `best` epochs reaches exactly the weights best.npz kept
    shorter = fit(tiny, out=tmp_path / "short", echo=quiet, progress=False, **{**OVERSHOOT, "epochs": best})
    assert same(npz(tmp_path / "run" / "best.npz"), npz(tmp_path / "short" / "weights.npz"))
    assert same(npz(tmp_path / "run" / "weights.npz"), weights(history.model))       # the last epoch's
    assert not same(npz(tmp_path / "run" / "best.npz"), weights(history.model))
    assert same(history.best_weights, npz(tmp_path / "run" / "best.npz"))


def test_monitor_val_acc_and_restore_best_weights(tiny, tmp_path):
    lines = []
    history = fit(tiny, out=tmp_path / "run", echo=lines.append, progress=False, monitor="val_acc",
                  restore_best_weights=True, **OVERSHOOT)
    accs = [row["val_acc"] for row in history.rows]
    best = int(np.argmax(accs)) + 1                 # the first of equal maxima, as Keras keeps it
    assert history.best["epoch"] == best and accs[-1] < accs[best - 1]
    assert same(npz(tmp_path / "run" / "weights.npz"), npz(tmp_path / "run" / "best.npz"))
    assert same(weights(history.model), npz(tmp_path / "run" / "best.npz"))
    assert f"restored the weights of epoch {best}, the best by val_acc (restore_best_weights)" in lines
    marked = [line.split()[1] for line in lines if line.endswith("[best]")]
    assert marked[-1] == f"{best}/6"


def test_without_validation_the_training_counterpart_is_monitored(tiny, tmp_path):
    lines = []
    history = fit(tiny, out=tmp_path / "run", echo=lines.append, progress=False, val_split=0.0, epochs=2,
                  patience=3)
    assert history.best["monitor"] == "train_loss"
    assert "best.npz by train_loss (no validation data), early stopping after 3 epochs without improvement" in lines[0]
    assert (tmp_path / "run" / "best.npz").is_file()


# -- early stopping -----------------------------------------------------------------------------

CURVE = [1.0, 0.8, 0.79, 0.85, 0.78, 0.9, 0.7, 0.6]


# Expected epochs worked by hand with Keras' EarlyStopping rule (wait += 1 each epoch; reset when
# the value beats the reference by more than min_delta; stop when wait >= patience) and
# ModelCheckpoint(save_best_only): strict improvement.
@pytest.mark.parametrize("patience, min_delta, stopped, best", [
    (2, 0.05, 4, 3),         # 0.79 beats 0.8 but not by 0.05: waits 1, 2 -> stop after epoch 4
    (1, 0.0, 4, 3),          # 0.85 does not beat 0.79: stop after epoch 4
    (2, 0.0, None, 8),       # never two epochs in a row without a new best
    (0, 0.0, 4, 3),          # Keras' patience 0: the first epoch that does not improve
    (3, 0.05, 5, 5),         # waits at 3, 4, 5: epoch 5's 0.78 is the best but not better by 0.05
])
def test_early_stopping_on_a_constructed_curve(patience, min_delta, stopped, best):
    tracker = Tracker("val_loss", patience, min_delta)
    for epoch, value in enumerate(CURVE, 1):
        tracker.update(epoch, {"val_loss": value})
        if tracker.stopped:
            break
    assert (tracker.stopped_epoch, tracker.best_epoch) == (stopped, best)


def test_a_nan_is_never_the_best():
    tracker = Tracker("val_acc", patience=1)
    assert tracker.update(1, {"val_acc": float("nan")}) is False
    assert tracker.update(2, {"val_acc": 0.5}) and tracker.best_epoch == 2
    assert not tracker.update(3, {"val_acc": 0.5}) and tracker.stopped_epoch == 3


def test_fit_stops_early_at_the_right_epoch(tiny, tmp_path, monkeypatch):
    """The training loop on the constructed curve (patience 2, min_delta 0.05): it trains 4 epochs,
    keeps epoch 3 in best.npz and says why it stopped."""
    evaluate, calls = Model.evaluate, []

    def constructed(self, x, y, batch=256, loss="cross_entropy"):
        _, outputs = evaluate(self, x, y, batch=batch, loss=loss)
        calls.append(1)
        return CURVE[len(calls) - 1], outputs

    monkeypatch.setattr(Model, "evaluate", constructed)
    lines = []
    history = fit(tiny, out=tmp_path / "run", echo=lines.append, progress=False, epochs=8, patience=2,
                  min_delta=0.05)
    assert [row["epoch"] for row in history.rows] == [1, 2, 3, 4]
    assert history.best == {"monitor": "val_loss", "value": 0.79, "epoch": 3, "stopped_early": 4}
    assert lines[-1] == ("early stopping after epoch 4: val_loss has not improved by more than 0.05 for "
                         "2 epochs (best val_loss 0.79 at epoch 3)")
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["best"]["stopped_early"] == 4 and len(log["epochs"]) == 4
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(CnnSpecError, match=r"this run stopped early after epoch 4 \(patience 2\): there is "
                                           r"nothing to resume"):
        fit(tiny, resume=tmp_path / "run", echo=lines.append, progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


# -- schedules ----------------------------------------------------------------------------------

def test_logged_learning_rates_follow_torch(tiny):
    """Per epoch (step) and per batch (one-cycle, whose momentum the log also records), the lr of
    each epoch's first batch, as torch's schedulers give it."""
    torch = pytest.importorskip("torch")
    history = fit(tiny, echo=quiet, progress=False, epochs=5, schedule="step(2, gamma=0.5)", warmup=1)
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / 3, total_iters=1),
        torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)], milestones=[1])
    expected = []
    for _ in range(5):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose([row["lr"] for row in history.rows], expected, rtol=1e-12)

    history = fit(tiny, echo=quiet, progress=False, epochs=3, schedule="onecycle(max_lr=0.2)")
    batches = 6                                              # 86 samples in batches of 16
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=3 * batches)
    lrs, momenta = [], []
    for step in range(3 * batches):
        if step % batches == 0:
            lrs.append(opt.param_groups[0]["lr"])
            momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    np.testing.assert_allclose([row["lr"] for row in history.rows], lrs, rtol=1e-12)
    np.testing.assert_allclose([row["momentum"] for row in history.rows], momenta, rtol=1e-12)


def test_schedule_defaults_come_from_the_run(tiny):
    config = resolve_config(tiny, epochs=10, schedule="cosine", warmup=3)
    from cnnspec.train.callbacks import make_optimizer, make_schedule

    model = tiny.compile()
    schedule = make_schedule(make_optimizer(model, config), config, steps_per_epoch=6)
    cosine = schedule.scheduler.schedulers[1]
    assert cosine.T_max == 7 and schedule.interval == "epoch"          # 10 epochs - 3 of warm-up
    config = resolve_config(tiny, epochs=10, schedule="onecycle")
    schedule = make_schedule(make_optimizer(model, config), config, steps_per_epoch=6)
    assert schedule.scheduler.total_steps == 60 and schedule.scheduler.max_lr == 0.1
    assert schedule.interval == "step"
    config = resolve_config(tiny, epochs=3, schedule="cosine(interval=step)", warmup=18)
    with pytest.raises(CnnSpecError, match=r"18 leaves none"):
        make_schedule(make_optimizer(model, config), config, steps_per_epoch=6)


# -- resuming -----------------------------------------------------------------------------------

RESUMABLE = {
    # name: (network, settings, interrupted in (epoch, after batch), the checkpoint's position, schedule steps)
    "onecycle+clip": (SIX, dict(optimizer="sgd(lr=0.1, momentum=0.9)", schedule="onecycle(max_lr=0.3)",
                                clip_grad_norm=0.5, patience=2, monitor="val_acc", top_k=2, epochs=4),
                      (2, 2), (2, 3), 7 + 3),         # 108 samples in batches of 16: 7 a epoch, per batch
    "adamw+warmup+cosine": (SIX, dict(optimizer="adamw(lr=0.01)", schedule="cosine(eta_min=0.001)",
                                      warmup="linear(2, start_factor=0.1)", restore_best_weights=True,
                                      patience=5, top_k=2, epochs=4),
                            (2, 2), (2, 3), 1),                                        # per epoch
    # after the best epoch (4) and one without improvement: the tracker's state decides best.npz
    "after-the-best": (TINY, dict(patience=3, restore_best_weights=True, **OVERSHOOT), (6, 1), (6, 2), None),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_resume_mid_schedule_equals_an_uninterrupted_run(name, tmp_path):
    """Interrupted inside the warm-up, one-cycle's rise, or after the best epoch, and resumed: the
    weights, log, best.npz and early-stopping state are bit-identical to an uninterrupted run's."""
    text, settings, at, position, steps = RESUMABLE[name]
    path = tmp_path / "net.cnn"
    path.write_text(text)
    net = cnnspec.load(path)
    straight = fit(net, echo=quiet, progress=False, out=tmp_path / "straight", **settings)
    stopped = fit(net, echo=quiet, progress=False, out=tmp_path / "run", on_batch=interrupt_at(*at), **settings)
    assert stopped.interrupted
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == position
    assert (state["schedule"] or {}).get("last_epoch") == steps
    assert state["tracker"]["best_epoch"] == stopped.best["epoch"]
    resumed = fit(net, echo=quiet, progress=False, resume=tmp_path / "run")
    assert not resumed.interrupted
    assert same(weights(straight.model), weights(resumed.model))
    assert without_timings(resumed.rows) == without_timings(straight.rows)
    assert resumed.best == straight.best
    assert same(npz(tmp_path / "straight" / "best.npz"), npz(tmp_path / "run" / "best.npz"))
    assert same(npz(tmp_path / "straight" / "weights.npz"), npz(tmp_path / "run" / "weights.npz"))
    if "top_k" in settings:
        assert {"train_top2", "val_top2", "lr"} <= set(resumed.rows[0])
    if name == "after-the-best":
        assert straight.best["epoch"] == 4 and same(weights(resumed.model), npz(tmp_path / "run" / "best.npz"))


# -- top-k --------------------------------------------------------------------------------------

def test_top_k_counts_labels_among_the_k_highest_scores():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((200, 10))
    labels = rng.integers(0, 10, 200)
    for k in (1, 3, 5):
        ranked = np.argsort(-scores, axis=1)[:, :k]
        expected = sum(label in row for label, row in zip(labels, ranked))
        assert top_k_correct(scores, labels, k) == expected
    ties = np.array([[1.0, 2.0, 2.0, 0.0]])
    assert top_k_correct(ties, np.array([2]), 1) == 1       # tied at the top: counts (tf.math.in_top_k)
    assert top_k_correct(ties, np.array([0]), 2) == 0


def test_top_k_in_training_logs_and_evaluate(tmp_path, capsys):
    path = tmp_path / "six.cnn"
    path.write_text(SIX.replace("    augment", "    top_k     = 3\n    augment"))
    run = tmp_path / "run"
    assert main(["train", str(path), "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert " top3 " in out and "top-3 accuracy" in out
    header = (run / "log.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_acc,train_top3,val_loss,val_acc,val_top3,lr,seconds,samples_per_s"
    row = json.loads((run / "log.json").read_text())["epochs"][0]
    assert row["val_acc"] <= row["val_top3"] <= 1
    # evaluate takes the run's top_k; the run directory means its best.npz
    assert main(["evaluate", str(path), "--weights", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert f"using {run / 'best.npz'}" in captured.err
    assert report["top_k"] == 3 and report["top_k_accuracy"] == pytest.approx(row["val_top3"])
    assert main(["evaluate", str(path), "--weights", str(run / "weights.npz"), "--top-k", "6"]) == 1
    assert "top_k = 6 ranks 6 of the network's 6 class scores" in capsys.readouterr().err


# -- settings, flags and their errors -----------------------------------------------------------

def test_every_key_is_a_flag(tiny_path, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_path), "--epochs", "2", "--out", str(run), "--no-progress",
                 "--optimizer", "adamw", "--weight-decay", "0.05", "--schedule", "step(1, gamma=0.5)",
                 "--warmup", "0", "--monitor", "val_acc", "--patience", "4", "--min-delta", "0.01",
                 "--restore-best-weights", "--clip-grad-norm", "2", "--top-k", "3"]) == 1
    assert "top_k = 3 ranks 3 of the network's 3 class scores" in capsys.readouterr().err
    assert main(["train", str(tiny_path), "--epochs", "2", "--out", str(run), "--no-progress",
                 "--optimizer", "adamw", "--weight-decay", "0.05", "--schedule", "step(1, gamma=0.5)",
                 "--warmup", "0", "--monitor", "val_acc", "--patience", "4", "--min-delta", "0.01",
                 "--restore-best-weights", "--clip-grad-norm", "2", "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "adamw(lr=0.001, weight_decay=0.05)" in out
    assert ("step(step_size=1, gamma=0.5), clip_grad_norm 2, top-1 accuracy; best.npz by val_acc, early stopping "
            "after 4 epochs without improvement by more than 0.01, restore_best_weights") in out
    config = json.loads((run / "log.json").read_text())["config"]
    assert (config["schedule"], config["warmup"], config["monitor"], config["patience"], config["min_delta"],
            config["restore_best_weights"], config["clip_grad_norm"], config["top_k"]) == \
        ({"name": "step", "step_size": 1, "gamma": 0.5}, None, "val_acc", 4, 0.01, True, 2.0, 1)
    assert [row["lr"] for row in json.loads((run / "log.json").read_text())["epochs"]] == [0.001, 0.0005]


@pytest.fixture
def tiny_path(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("line, message, caret, hint", [
    ("schedule  = cosine(T_max=0)", "T_max must be at least 1, got 0", "^", None),
    ("schedule  = cosin", "unknown schedule `cosin`", "^~~~~", "did you mean `cosine`?"),
    ("schedule  = step(gamma=0.5)", "`step` needs step_size", "^" + "~" * 14, "e.g. step(10, gamma=0.5)"),
    ("schedule  = onecycle(max_lr=0.1, pct_start=1.5)", "pct_start must be between 0 and 1, got 1.5", "^~~", None),
    ("schedule  = multistep([5, 3])", "milestones must increase: 3 after 5", "^", None),
    ("schedule  = cosine(interval=batch)", "unknown interval `batch`", "^~~~~", "choose from: epoch, step"),
    ("warmup    = -1", "warmup must be at least 0, got -1", "^", None),
    ("warmup    = linear(2, start_factor=0)", "start_factor must be above 0 and at most 1, got 0", "^", None),
    ("monitor   = val_accuracy", "unknown quantity to monitor `val_accuracy`", "^~~~~~~~~~~~",
     "did you mean `val_acc`?"),
    ("patience  = 2.5", "patience must be an integer, got 2.5", "^~~", None),
    ("min_delta = -0.1", "min_delta must be at least 0, got -0.1", "^", None),
    ("restore_best_weights = yes", "restore_best_weights is true or false, got 'yes'", "^~~", None),
    ("clip_grad_norm = 0", "clip_grad_norm must be above 0, got 0", "^", None),
    ("top_k     = 0", "top_k must be at least 1, got 0", "^", None),
])
def test_bad_values_in_the_file_are_located(tmp_path, line, message, caret, hint):
    path = tmp_path / "bad.cnn"
    path.write_text(TINY.replace("    augment   = [flip, shift(1)]", "    " + line))
    with pytest.raises(CnnSpecError) as info:
        cnnspec.load(path)
    err = info.value
    value_col = 5 + line.index("=") + 2
    assert (err.file, err.line, err.message) == (str(path), 14, message)
    assert err.col >= value_col
    text = str(err).splitlines()
    assert text[0].startswith(f"{path}:14:{err.col}: error: {message}")
    assert text[1] == "    " + "    " + line and text[2].strip().startswith(caret)
    if hint:
        assert hint in text[-1]


def test_adamw_in_the_file(tmp_path):
    path = tmp_path / "adamw.cnn"
    path.write_text(TINY.replace("sgd(lr=0.1, momentum=0.9)", "adamw(lr=0.01, momentum=0.9)"))
    with pytest.raises(CnnSpecError) as info:
        cnnspec.load(path)
    assert str(info.value).startswith(f"{path}:11:32: error: unknown argument of `adamw`: `momentum`")
    path.write_text(TINY.replace("sgd(lr=0.1, momentum=0.9)", "adamw(0.01, (0.9, 0.99))"))
    config = resolve_config(cnnspec.load(path))
    assert config.optimizer == "adamw"
    assert config.optimizer_args == {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.01}


def test_settings_that_do_not_go_together(tmp_path, tiny):
    path = tmp_path / "both.cnn"
    path.write_text(TINY.replace("    augment   = [flip, shift(1)]", "    schedule = onecycle\n    warmup = 2"))
    with pytest.raises(CnnSpecError) as info:
        cnnspec.load(path)
    assert str(info.value).startswith(f"{path}:15:5: error: onecycle warms up by itself (its pct_start)")
    with pytest.raises(CnnSpecError, match="warms up by itself"):
        resolve_config(tiny, schedule="onecycle", warmup=2)


@pytest.mark.parametrize("settings, message", [
    ({"schedule": "cosine(T_max=0)"}, r"--schedule cosine\(T_max=0\): T_max must be at least 1, got 0"),
    ({"schedule": {"name": "step"}}, r"--schedule step\(\): `step` needs step_size"),
    ({"warmup": "2\n    epochs = 100"}, "not a value of `warmup`"),
    ({"monitor": "loss"}, "unknown quantity to monitor `loss`"),
    ({"patience": -2}, "--patience -2: patience must be at least 0"),
    ({"top_k": True}, "top_k must be an integer"),
    ({"clip_grad_norm": float("nan")}, "clip_grad_norm"),
    ({"restore_best_weights": 1}, "restore_best_weights is true or false"),
])
def test_bad_overrides(tiny, settings, message):
    with pytest.raises(CnnSpecError, match=message):
        resolve_config(tiny, **settings)


def test_python_values_for_the_new_settings(tiny):
    config = resolve_config(tiny, schedule={"name": "multistep", "milestones": [2, 4], "gamma": 0.5},
                            warmup=2, patience=3, min_delta=0.01, restore_best_weights=True, clip_grad_norm=1,
                            top_k=2, monitor="val_acc", optimizer="adamw")
    assert config.schedule == {"name": "multistep", "milestones": [2, 4], "gamma": 0.5}
    assert config.warmup == {"total_iters": 2}
    assert (config.patience, config.min_delta, config.restore_best_weights, config.clip_grad_norm, config.top_k,
            config.monitor) == (3, 0.01, True, 1.0, 2, "val_acc")
    assert config.optimizer_args == {"lr": 0.001, "betas": (0.9, 0.999), "weight_decay": 0.01}   # AdamW's
    assert resolve_config(tiny, schedule="none").schedule is None


def test_summary_counts_the_optimizer_state_of_adamw_and_one_cycle():
    from cnnspec.analysis.summary import optimizer_slots

    def slots(train):
        return optimizer_slots(cnnspec.loads(TINY.replace("    optimizer = sgd(lr=0.1, momentum=0.9)", train))
                               .graph.graph["train"])

    assert slots("    optimizer = adamw") == slots("    optimizer = adam") == 2
    assert slots("    optimizer = sgd(lr=0.1)\n    schedule = onecycle") == 1       # momentum cycled
    assert slots("    optimizer = sgd(lr=0.1)\n    schedule = onecycle(cycle_momentum=false)") == 0
