"""The training loop: :func:`fit` trains a network on a data set and returns its :class:`History`.

Reproducible: the model's initial weights come from ``seed``; each epoch's shuffling and
augmentation draw from a generator seeded by (seed, epoch). A run interrupted with Ctrl-C
(SIGINT) finishes its current batch and saves a checkpoint — weights, optimizer state, epoch,
batch and generator states — from which ``fit(..., resume=DIR)`` continues to the very weights an
uninterrupted run reaches.

A run directory holds ``weights.npz`` (by layer name), ``best.npz`` (the weights of the best epoch
by the ``monitor``ed quantity), ``log.csv``, ``log.json``, ``curves.png`` and ``checkpoint/`` (see
:mod:`cnnspec.train.checkpoint`: the parts and the state of a checkpoint are committed together,
and a checkpoint whose parts disagree is refused). Every file is written atomically. Schedules,
early stopping and top-k accuracy live in :mod:`cnnspec.train.callbacks`; their state rides in the
checkpoint's state, the best weights in a part of it. A loss that stops being finite ends the run
with a CnnSpecError saying where and why.
"""
from __future__ import annotations

import csv
import errno
import io
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnspec import atomic
from cnnspec.data import Augmenter, load_dataset
from cnnspec.data.augment import describe as describe_augment
from cnnspec.errors import CnnSpecError, plural
from cnnspec.limits import require_memory
from cnnspec.train import checkpoint
from cnnspec.train.callbacks import (Tracker, check_top_k, describe_fit, make_optimizer, make_schedule,
                                     top_k_correct)
from cnnspec.train.config import TrainConfig, located, match_layers, resolve_config
from cnnspec.train.progress import CompileNotice, EpochBar, epoch_line

LOG_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "samples_per_s")


@dataclass
class History:
    """What a training run did: one row per epoch (``LOG_FIELDS``, plus ``train_topK``/``val_topK``,
    ``momentum`` and ``grad_norm`` when the run has them; accuracies are fractions). ``best`` is the
    best epoch by the monitored quantity (``{"monitor", "value", "epoch", "stopped_early"}``) and
    ``best_weights`` its arrays (what ``best.npz`` holds)."""

    network: str
    config: TrainConfig
    rows: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    data: dict = field(default_factory=dict)        # spec, sample shape, sizes of the splits
    init: dict | None = None                          # loaded / skipped / new layers (``--init``)
    frozen: list = field(default_factory=list)
    interrupted: bool = False
    best: dict | None = None
    best_weights: dict | None = None
    compile_seconds: float | None = None              # first run: compiling kernels (not in the epochs)
    out: Path | None = None
    written: list = field(default_factory=list)      # the files of ``out`` this call wrote at the end
    model: object = None
    dataset: object = None

    @property
    def last(self) -> dict:
        return self.rows[-1] if self.rows else {}

    def to_json(self) -> dict:
        return {"network": self.network, "config": self.config.to_json(), "classes": self.classes,
                "data": self.data, "init": self.init, "frozen": self.frozen, "interrupted": self.interrupted,
                "best": self.best, "epochs": self.rows}


class StopRequest:
    """Turns Ctrl-C into a request to stop after the current batch (a second Ctrl-C stops at once)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (Ctrl-C again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def fit(network, config: TrainConfig | None = None, *, dataset=None, out=None, resume=None,
        progress: bool = True, echo=print, on_batch=None, networks: dict | None = None, **overrides) -> History:
    """Train ``network`` (a :class:`cnnspec.network.Network`) and return its :class:`History`.

    ``config`` (default: the file's train section with ``overrides`` such as ``epochs=3``,
    ``data="shapes:n=500"``, ``lr=0.1``, ``freeze=["conv*"]``; see :func:`resolve_config`);
    ``dataset`` a ready :class:`cnnspec.data.Dataset` instead of ``config.data``; ``out`` the run
    directory to write (None: write nothing); ``resume`` a run directory to continue (then ``out``
    defaults to it and only ``epochs`` may be overridden); ``echo`` receives each line of text;
    ``on_batch(epoch, batch, loss)`` is called after every batch.

    The task (dsl.md §10.4) is the train section's: ``classify``; ``reconstruct`` (the rows have
    ``train_psnr``/``val_psnr`` in dB, and a VAE's ``*_recon`` and ``*_kl`` parts of the loss);
    ``segment`` (``*_acc`` the pixel accuracy, ``*_miou`` the mean IoU); ``gan`` (see
    :mod:`cnnspec.train.gan`: ``networks`` maps names to Networks, default the networks of
    ``network``'s file; the rows have ``d_loss``, ``g_loss``, ``d_real``, ``d_fake``;
    ``History.model`` is the generator, ``History.discriminator`` the discriminator).
    ``History.rows`` holds every epoch's figures, ``History.best`` the best epoch by the monitored
    quantity (``val_psnr``/``val_miou`` by default for reconstruct/segment) and ``History.model``
    the trained model.
    """
    state = parts = None
    if resume is not None:
        resume = Path(resume)
        parts, state = _read_checkpoint(resume)
        gan = state.get("task") == "gan"
        names = (state["config"].get("generator"), state["config"].get("discriminator")) if gan else (state["network"],)
        if network.name not in names:
            raise CnnSpecError(f"the checkpoint is of network {state['network']}, not {network.name}",
                               file=str(resume / "checkpoint"))
        extra = sorted(k for k, v in overrides.items() if v is not None and k != "epochs")
        if config is not None or extra:
            raise CnnSpecError(f"a resumed run keeps its settings; only epochs can change "
                               f"(given: {', '.join(extra) or 'config'})")
        with state_part(resume, "config"):
            config = TrainConfig.from_json(state["config"])
        if overrides.get("epochs") is not None:
            config.epochs = int(overrides["epochs"])
        out = resume if out is None else out
    elif config is None:
        config = resolve_config(network, **overrides)
    if config.task == "gan":
        from cnnspec.train.gan import GanRun, gan_networks

        generator, discriminator = gan_networks(network, networks, config)
        run = GanRun(generator, discriminator, config, dataset, Path(out) if out is not None else None,
                     progress, echo, on_batch)
    else:
        run = Run(network, config, dataset, Path(out) if out is not None else None, progress, echo, on_batch)
    if state is not None:
        run.restore(resume, parts, state)
    return run.train()


class Trains:
    """What every kind of run shares: ``train()`` runs ``_train()``, and a file that cannot be
    written ends it with an error that names the checkpoint kept.

    ``kept`` is the last checkpoint of this run (or of the run it resumed): ``(run folder, epoch,
    batch)``, the position it continues from; None while this run has committed none. A
    checkpoint in ``out`` that is not ``kept`` is an earlier run's, and no message offers it."""

    out: Path | None
    kept: tuple | None = None

    def train(self) -> History:
        try:
            return self._train()
        except atomic.WriteError as err:
            if self.kept is None:
                raise
            fix = "free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
            raise CnnSpecError(err.message, file=err.file,
                               hint=f"the last complete checkpoint is kept: {fix}, then continue "
                                    f"with --resume {self.kept[0]}") from None

    def note_checkpoint(self, run: Path) -> None:
        """This run's position has been committed in (or resumed from) ``run``'s checkpoint."""
        self.kept = (Path(run), self.epoch, self.batch)

    def kept_text(self) -> str:
        """What an error ending the run says is kept: ``; the checkpoint after epoch 2 is kept in
        DIR/checkpoint``, or that nothing of this run was saved (and that ``out``'s files, if
        there are any, are an earlier run's, untouched)."""
        if self.kept is not None:
            run, epoch, batch = self.kept
            when = (f"in epoch {epoch} after batch {batch}" if batch else
                    f"after epoch {epoch - 1}" if epoch > 1 else "of the initial weights")
            return f"; the checkpoint {when} is kept in {run / 'checkpoint'}"
        if self.out is None:
            return ""
        if checkpoint.exists(self.out / "checkpoint"):
            return f"; nothing of this run was saved ({self.out} holds an earlier run's files, untouched)"
        return "; nothing of this run was saved"


class Run(Trains):
    """One training run: the data, model, optimizer and augmenter it made, and where it stands."""

    def __init__(self, network, config: TrainConfig, dataset, out: Path | None, progress: bool, echo, on_batch):
        self.network, self.config, self.out = network, config, out
        self.progress, self.echo, self.on_batch = progress, echo, on_batch
        if out is not None:                 # a folder that cannot be written is found out now
            atomic.make_folder(out, "run folder")
        estimate = network.summary(config.batch)["totals"]["memory_bytes"]["training"]
        require_memory(estimate, f"training `{network.name}` with a batch of {config.batch} "
                                 f"(cnnspec summary's training estimate)",
                       hint="memory grows with the batch: try a smaller one (--batch), or a smaller network")
        if dataset is None:
            if config.data_base is None:
                config.data_base = os.getcwd()
            with located(network, "data", config.from_file):
                dataset = load_dataset(config.data, network.input_shape, seed=config.seed,
                                       val_split=config.val_split, base_dir=config.data_base,
                                       output_shape=network.output_shape, task=config.task)
        self.dataset = dataset
        with located(network, "augment", config.from_file):
            self.augment = Augmenter(config.augment, dataset.sample_shape)
        with located(network, "corrupt", config.from_file):
            self.corrupt = Augmenter(config.corrupt, dataset.sample_shape)
        if config.task == "reconstruct" and tuple(network.output_shape) != tuple(dataset.sample_shape):
            with located(network, "task", config.from_file):
                raise CnnSpecError(f"task = reconstruct trains the output to give back the input: the output is "
                                   f"{'x'.join(map(str, network.output_shape))}, the input "
                                   f"{'x'.join(map(str, dataset.sample_shape))}",
                                   hint="end the decoder at the input's shape (conv_transpose, upsample, reshape)")
        if config.task == "segment" and config.augment and dataset.y_train.shape[1:] != dataset.sample_shape[1:]:
            Augmenter(config.augment, dataset.sample_shape)(dataset.x_train[:1], np.random.default_rng(0),
                                                            dataset.y_train[:1])     # its located error
        self.model = network.compile(dtype="float32", seed=config.seed)
        check_last_batch(network, config, [self.model], len(dataset.x_train))
        self.history = History(network.name, config, classes=list(dataset.classes), out=out, dataset=dataset,
                               model=self.model, data={
                                   "spec": dataset.spec, "sample_shape": list(dataset.sample_shape),
                                   "train": len(dataset.x_train), "val": len(dataset.x_val),
                                   "test": None if dataset.x_test is None else len(dataset.x_test)})
        self.layers = network.layers()
        self.frozen_layers = []                        # the layers --freeze made untrainable
        if config.freeze:
            self.frozen_layers = self.model.set_trainable(match_layers(self.layers, config.freeze, "--freeze"),
                                                          False)
        for _, glob in config.unfreeze_after:
            match_layers(self.layers, [glob], "--unfreeze-after")
        self.optimizer = make_optimizer(self.model, config)
        with located(network, "schedule" if config.schedule else "warmup", config.from_file):
            self.schedule = make_schedule(self.optimizer, config, self.n_batches)
        if config.top_k:
            with located(network, "top_k", config.from_file):
                check_top_k(config.top_k, self.model.output_shape, dataset.y_train)
        self.tracker = Tracker(config.monitor, config.patience, config.min_delta,
                               has_validation=len(dataset.x_val) > 0)
        # where to start: the next epoch and batch, and that epoch's generator state and sums so far
        self.epoch, self.batch, self.rng_state, self.sums = 1, 0, None, None
        self.resumed = self.finished = False
        self.best_saved = None         # the best epoch whose weights out's best.npz holds (None: none of this run's)

    def restore(self, run: Path, parts: dict, state: dict) -> None:
        """Continue from the checkpoint of ``run`` (its ``parts`` and ``state``)."""
        folder = str(run / "checkpoint")
        for name in ("weights", "optimizer"):
            if name not in parts:
                raise CnnSpecError(f"the checkpoint has no {name}", file=folder)
        try:
            self.model.load_arrays(parts["weights"], source=folder)
            self.optimizer.load_state_dict(parts["optimizer"])
        except CnnSpecError as exc:
            raise CnnSpecError(exc.message, file=folder, hint=exc.hint) from None
        self.history.rows, self.history.init = state["rows"], state.get("init")
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.rng_state, self.sums = read_position(run, state, lengths=(4, 7), numbers=6)
        if self.sums is not None and len(self.sums) > 6:
            with state_part(run, "sums"):
                TaskSums(self.config.task, self.n_classes).load(self.sums[6])
        if state.get("engine_rng") is not None:
            with state_part(run, "engine_rng"):
                self.model.rng.bit_generator.state = state["engine_rng"]
        self.restore_fit_state(parts, state, folder)
        self.resumed, self.finished = True, bool(state.get("finished"))
        self.note_checkpoint(run)      # best.npz: written again from the checkpoint's at the next commit

    def fit_state(self) -> dict:
        """What the schedule and the tracker carry over (part of the checkpoint's state)."""
        return {"schedule": self.schedule.state_dict() if self.schedule else None,
                "tracker": self.tracker.state_dict()}

    def restore_fit_state(self, parts: dict, state: dict, folder: str) -> None:
        run = Path(folder).parent
        if self.schedule is not None and state.get("schedule") is not None:
            with state_part(run, "schedule"):
                self.schedule.load_state_dict(state["schedule"])
        if state.get("tracker") is not None:
            with state_part(run, "tracker"):
                self.tracker.load_state_dict(state["tracker"])
            if self.tracker.best_epoch is not None:
                if "best" not in parts:
                    raise CnnSpecError("the checkpoint names a best epoch but holds no best weights", file=folder)
                self.tracker.best_weights = dict(parts["best"])
        self.history.best = self.tracker.to_json()

    def _train(self) -> History:
        config, history, echo = self.config, self.history, self.echo
        if self.resumed:
            if self.tracker.stopped or self.epoch > config.epochs:
                return self.resume_finished()
            echo(f"resuming {self.out} at epoch {self.epoch}, batch {self.batch}")
        else:
            if config.init:
                history.init = _load_init(self.model, config.init)
                echo(_init_line(config.init, history.init))
            echo(describe_run(history, self.dataset, config))
            if config.freeze:
                echo(frozen_line(config.freeze, self.frozen_layers))
        # compile before the first batch, so that the bar's rate and time left and the epoch's
        # seconds are the training's own; the first run on a machine says what it is doing
        with CompileNotice() as notice:
            self.model.warm_up(self.optimizer, config.loss)
        history.compile_seconds = notice.seconds if notice.shown else None
        with StopRequest() as stop:
            while self.epoch <= config.epochs and not self.tracker.stopped:
                finished = self.train_epoch(stop)
                if not finished or (stop.requested and self.epoch <= config.epochs and not self.tracker.stopped):
                    history.interrupted = True
                    where = (f"in epoch {self.epoch} after batch {self.batch}/{self.n_batches}" if not finished
                             else f"after epoch {self.epoch - 1}")
                    saved = (f": checkpoint saved in {self.out / 'checkpoint'}; continue with --resume {self.out}"
                             if self.out is not None else "")
                    echo(f"interrupted {where}{saved}")
                    return history
            self.finish_fit()               # a Ctrl-C now only asks to stop: the files get written
            self.write_final()
        return history

    def write_final(self) -> None:
        """The run's final files (weights, logs, curves), then the checkpoint marked finished: a
        run stopped while writing them is finished by ``--resume``."""
        if self.out is None:
            return
        out, history = self.out, self.history
        written = [self.model.save(out / "weights.npz")]
        self.settle_best()
        if (out / "best.npz").is_file():
            written.append(out / "best.npz")
        written += _write_logs(out, history)
        from cnnspec.render.pictures import plot_curves

        written.append(atomic.write_atomic(out / "curves.png", lambda tmp: plot_curves(history.rows, tmp),
                                           what="training curves"))
        if self.kept is None or self.kept[0] != out:    # no epoch ran (--epochs 0): the state as it
            self.save_checkpoint()                       # is, which --resume can go on from (not an
                                                         # earlier run's checkpoint marked finished)
        checkpoint.update_state(out / "checkpoint", default=_json_default, finished=True)
        history.written = [Path(p) for p in written]

    def resume_finished(self) -> History:
        """``--resume`` of a run that has trained all its epochs (or stopped early): write the
        final files if it was stopped while writing them; else nothing is left to do, which is an
        error saying what to do."""
        config, done, tracker = self.config, self.epoch - 1, self.tracker
        if self.batch and not tracker.stopped:  # stopped inside an epoch beyond the new --epochs
            raise CnnSpecError(f"this run stopped inside epoch {self.epoch}: it cannot end after epoch "
                               f"{config.epochs}", file=str(self.out),
                               hint=f"resume it with --epochs {self.epoch} or more")
        if self.finished:
            if tracker.stopped:
                raise CnnSpecError(f"this run stopped early after epoch {tracker.stopped_epoch} (patience "
                                   f"{config.patience}): there is nothing to resume", file=str(self.out))
            plural = "s" if done != 1 else ""
            raise CnnSpecError(f"this run has already trained for {done} epoch{plural}"
                               + (f" (--epochs {config.epochs} asks for no more)" if config.epochs < done else "")
                               + ": there is nothing to resume", file=str(self.out),
                               hint=f"give --epochs N with N > {done} to train it further, e.g. "
                                    f"--resume {self.out} --epochs {max(2 * done, 1)}")
        self.echo(f"{self.history.network} has trained for {done} epoch{'s' if done != 1 else ''}; "
                  f"writing the final files its run did not finish writing")
        with StopRequest():
            self.finish_fit()
            self.write_final()
        return self.history

    def finish_fit(self) -> None:
        """Say why training stopped early; with ``restore_best_weights`` end with the best epoch's weights."""
        tracker, history = self.tracker, self.history
        history.best, history.best_weights = tracker.to_json(), tracker.best_weights
        if tracker.stopped:
            self.echo(tracker.describe_stop())
        if self.config.restore_best_weights and tracker.best_weights is not None:
            tracker.restore_best(self.model)
            self.echo(f"restored the weights of epoch {tracker.best_epoch}, the best by {tracker.quantity} "
                      f"(restore_best_weights)")

    def save_best(self) -> None:
        """Write the best epoch's arrays to ``best.npz`` (atomically, as ``Model.save``)."""
        atomic.write_npz(self.out / "best.npz", self.tracker.best_weights, what="best weights")
        self.best_saved = self.tracker.best_epoch

    def settle_best(self) -> None:
        """After each checkpoint this run commits (and with its final files), ``best.npz`` is made
        the checkpoint's: the best epoch's weights, written when that epoch is new (a resumed run
        writes them again, into another folder too), or no file while there is no best epoch.
        Until this run's first commit an earlier run's ``best.npz`` in the folder is left alone,
        like the rest of its files: a run that fails (or diverges) before then loses nothing of it."""
        if self.out is None:
            return
        if self.tracker.best_weights is None:
            (self.out / "best.npz").unlink(missing_ok=True)     # an earlier run's: stale now
        elif self.best_saved != self.tracker.best_epoch:
            self.save_best()

    @property
    def n_batches(self) -> int:
        return -(-len(self.dataset.x_train) // self.config.batch)

    def train_epoch(self, stop: StopRequest) -> bool:
        """Train from the current position to the end of the epoch (True), or until a stop is
        requested (False, with a checkpoint saved and the position kept)."""
        config, model, epoch, task = self.config, self.model, self.epoch, self.config.task
        x, y, batch = self.dataset.x_train, self.dataset.y_train, config.batch
        self.history.frozen = _apply_unfreezing(model, self.layers, config, epoch, self.echo,
                                                announce=self.batch == 0)
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(x))
        loss_sum, correct, seen, seconds, top_correct, norm_sum = 0.0, 0, 0, 0.0, 0, 0.0
        extra = TaskSums(task, self.n_classes)
        if self.batch:                                  # resuming inside this epoch
            rng.bit_generator.state = self.rng_state
            loss_sum, correct, seen, seconds, top_correct, norm_sum = [*self.sums, 0, 0.0][:6]
            extra.load(self.sums[6] if len(self.sums) > 6 else None)
        bar = EpochBar(epoch, config.epochs, self.n_batches, self.batch, enabled=self.progress)
        for b in range(self.batch, self.n_batches):
            tick = time.perf_counter()
            index = order[b * batch:(b + 1) * batch]
            xb, yb = x[index], y[index]
            if self.augment:
                if task == "segment":
                    xb, yb = self.augment(xb, rng, yb)
                else:
                    xb = self.augment(xb, rng)
            if task == "reconstruct":
                yb = xb                                  # the target: the clean input
                if self.corrupt:
                    xb = self.corrupt(xb, rng)
            loss, output = model.train_step(xb, yb, self.optimizer, loss=config.loss)
            if not math.isfinite(loss):
                bar.close()
                raise self.diverged(loss, b, loss_sum / seen if seen else None)
            if self.schedule is not None:
                self.schedule.after_batch()
            seconds += time.perf_counter() - tick
            loss_sum += loss * len(index)
            if task == "classify":
                correct += int(np.count_nonzero(_predicted(output) == yb))
            else:
                extra.add(output, yb, model.loss_parts, len(index))
            if config.top_k:
                top_correct += top_k_correct(output, yb, config.top_k)
            if config.clip_grad_norm is not None:
                norm_sum += self.optimizer.grad_norm
            seen += len(index)
            bar.update(loss_sum / seen, correct / seen if task == "classify" else None, seen / max(seconds, 1e-9))
            if self.on_batch is not None:
                self.on_batch(epoch, b, loss)
            if stop.requested and b + 1 < self.n_batches:
                bar.close()
                self.batch, self.rng_state = b + 1, rng.bit_generator.state
                self.sums = [loss_sum, correct, seen, seconds, top_correct, norm_sum, extra.state()]
                self.save_checkpoint()
                return False
        bar.close()
        k, schedule = config.top_k, self.schedule
        top = f"top{k}"
        row = {"epoch": epoch, "train_loss": loss_sum / seen}
        if task == "classify":
            row["train_acc"] = correct / seen
        row.update(extra.row("train"))
        if k:
            row[f"train_{top}"] = top_correct / seen
        row.update({"val_loss": None, **({"val_acc": None} if task == "classify" else extra.empty_row("val"))})
        if k:
            row[f"val_{top}"] = None
        row["lr"] = schedule.lr_of_epoch(epoch) if schedule else config.lr
        if schedule and schedule.momentum_of_epoch(epoch) is not None:
            row["momentum"] = schedule.momentum_of_epoch(epoch)
        if config.clip_grad_norm is not None:
            row["grad_norm"] = norm_sum / self.n_batches
        row.update({"seconds": round(seconds, 3), "samples_per_s": round(seen / max(seconds, 1e-9), 1)})
        if len(self.dataset.x_val):
            x_val, y_val = self.val_inputs(), self.dataset.y_val
            target = self.dataset.x_val if task == "reconstruct" else y_val
            val_loss, outputs = model.evaluate(x_val, target, batch=256, loss=config.loss)
            row["val_loss"] = float(val_loss)
            if task == "classify":
                row["val_acc"] = float(np.mean(_predicted(outputs) == y_val))
            else:
                sums = TaskSums(task, self.n_classes)
                sums.add(outputs, target, model.loss_parts, len(x_val))
                row.update(sums.row("val"))
            if k:
                row[f"val_{top}"] = top_k_correct(outputs, y_val, k) / len(y_val)
            if self.out is not None and task != "classify":
                self.write_pictures(epoch, x_val, outputs)
        self.history.rows.append(row)
        best = self.tracker.update(epoch, row, model)         # best.npz: written with the checkpoint
        self.history.best = self.tracker.to_json()
        self.echo(epoch_line(row, config.epochs, lr=schedule is not None) + ("  [best]" if best else ""))
        if schedule is not None:
            schedule.after_epoch()
        self.epoch, self.batch, self.rng_state, self.sums = epoch + 1, 0, None, None
        self.save_checkpoint()
        return True

    @property
    def n_classes(self) -> int:
        return max(len(self.dataset.classes), self.model.output_shape[0]) if self.config.task == "segment" else 0

    def val_inputs(self) -> np.ndarray:
        """The validation inputs: for a denoising auto-encoder corrupted once, with a generator of
        their own (seeded by the run's seed), the same every epoch."""
        x_val = self.dataset.x_val
        if self.config.task == "reconstruct" and self.corrupt:
            if getattr(self, "_val_corrupted", None) is None:
                from cnnspec.train.metrics import corrupted_held_out

                self._val_corrupted = corrupted_held_out(self.config.corrupt, x_val, self.config.seed)
            return self._val_corrupted
        return x_val

    def write_pictures(self, epoch: int, x_val, outputs) -> None:
        """``pictures/epoch_NNN.png``: eight validation samples, their inputs (clean, corrupted)
        and reconstructions, or their pictures, true and predicted masks."""
        from cnnspec.render.tasks import plot_reconstructions, plot_segmentations

        n = min(8, len(x_val))
        folder = self.out / "pictures"
        atomic.make_folder(folder, "pictures folder")
        path = folder / f"epoch_{epoch:03d}.png"
        if self.config.task == "reconstruct":
            corrupted = x_val[:n] if self.corrupt else None
            draw = lambda tmp: plot_reconstructions(self.dataset.x_val[:n], corrupted, outputs[:n], tmp,   # noqa: E731
                                                    title=f"epoch {epoch}")
        else:
            draw = lambda tmp: plot_segmentations(x_val[:n], self.dataset.y_val[:n], outputs[:n].argmax(axis=1),  # noqa
                                                  tmp, classes=self.dataset.classes, title=f"epoch {epoch}")
        atomic.write_atomic(path, draw, what="pictures")

    def diverged(self, loss: float, batch: int, mean_so_far) -> CnnSpecError:
        """The error that ends a run whose loss stopped being finite: where, the likely cause,
        what to try, and the checkpoint that is kept."""
        config, epoch = self.config, self.epoch
        first_step = epoch == 1 and batch == 0 and not self.resumed
        where = f"in epoch {epoch}, batch {batch + 1}/{self.n_batches}"
        if first_step:
            largest = float(np.max(np.abs(self.dataset.x_train))) if len(self.dataset.x_train) else 0.0
            cause = (f"the network's output is not finite on the first batch: the inputs run to "
                     f"{largest:.3g}" + ("; scale them to about [0, 1]" if largest > 1e3 else
                                         f", so the learning rate lr={config.lr:g} or the network's "
                                         f"fixed weights may be too large"))
        else:
            before = f" (the mean loss of this epoch so far was {mean_so_far:.4g})" if mean_so_far is not None else ""
            cause = f"the learning rate lr={config.lr:g} is likely too high{before}"
        return CnnSpecError(f"training diverged: the loss became {loss} {where}{self.kept_text()}",
                            hint=f"{cause}; try --lr {config.lr / 10:g}")

    def save_checkpoint(self) -> None:
        """The checkpoint (weights, optimizer state, the best weights and the position to continue
        from, committed as one), then the logs so far."""
        if self.out is None:
            return
        checkpoint.save(self.out / "checkpoint", self.checkpoint_parts(), self.checkpoint_state(),
                        default=_json_default)
        self.note_checkpoint(self.out)
        self.settle_best()
        _write_logs(self.out, self.history)

    def checkpoint_parts(self) -> dict:
        """The arrays a checkpoint keeps, by part: {part: {name: array}}."""
        parts = {"weights": self.model.arrays(), "optimizer": self.optimizer.state_dict()}
        if self.tracker.best_weights is not None:
            parts["best"] = self.tracker.best_weights
        return parts

    def checkpoint_state(self) -> dict:
        """Everything else a run needs to continue (JSON): one dict, extended by new settings."""
        return {"network": self.network.name, "file": self.network.file, "epoch": self.epoch,
                "batch": self.batch, "rng": self.rng_state, "sums": self.sums,
                "engine_rng": self.model.rng.bit_generator.state, "config": self.config.to_json(),
                "rows": self.history.rows, "init": self.history.init, "finished": False, **self.fit_state()}


class TaskSums:
    """What an epoch adds up beyond the loss for reconstruct (squared errors, a VAE's loss parts)
    and segment (the pixel confusion matrix); JSON-able (``state``) for a checkpoint."""

    def __init__(self, task: str, k: int = 0):
        self.task, self.k = task, k
        self.sse, self.values, self.parts, self.samples = 0.0, 0, {}, 0
        self.confusion = np.zeros((k, k), np.int64) if task == "segment" else None

    def add(self, output, target, parts: dict, n: int) -> None:
        if self.task == "reconstruct":
            self.sse += float(np.sum((np.asarray(output, np.float64) - target) ** 2))
            self.values += int(np.asarray(target).size)
            for key, value in parts.items():
                self.parts[key] = self.parts.get(key, 0.0) + float(value) * n
            self.samples += n
        elif self.task == "segment":
            from cnnspec.train.metrics import pixel_confusion

            self.confusion += pixel_confusion(np.asarray(output).argmax(axis=1), target, self.k)

    def row(self, split: str) -> dict:
        from cnnspec.train.metrics import mean_iou, psnr

        if self.task == "reconstruct":
            row = {f"{split}_psnr": psnr(self.sse / max(self.values, 1))}
            if len(self.parts) > 1:            # a VAE: the reconstruction and the KL terms apart
                row[f"{split}_recon"] = self.parts["output"] / max(self.samples, 1)
                row[f"{split}_kl"] = sum(v for k, v in self.parts.items() if k != "output") / max(self.samples, 1)
            return row
        if self.task == "segment":
            total = max(int(self.confusion.sum()), 1)
            return {f"{split}_acc": float(np.trace(self.confusion) / total), f"{split}_miou": mean_iou(self.confusion)}
        return {}

    def empty_row(self, split: str) -> dict:
        return {key: None for key in self.row(split)}

    def state(self) -> dict:
        return {"sse": self.sse, "values": self.values, "parts": self.parts, "samples": self.samples,
                "confusion": None if self.confusion is None else self.confusion.tolist()}

    def load(self, state: dict | None) -> None:
        if not state:
            return
        self.sse, self.values, self.samples = float(state["sse"]), int(state["values"]), int(state["samples"])
        self.parts = {k: float(v) for k, v in state["parts"].items()}
        if state.get("confusion") is not None:
            self.confusion = np.asarray(state["confusion"], np.int64).reshape(self.k, self.k)


def check_last_batch(network, config: TrainConfig, models, n: int, pack: int = 1) -> None:
    """Before the first batch: an epoch of ``n`` samples in batches of ``config.batch`` whose last
    batch holds one sample (one pack of ``pack`` pictures for a packed GAN's discriminator,
    ``models[-1]``) cannot train a batchnorm with one value per channel and sample (after
    ``dense``, or on 1x1 maps): PyTorch refuses that batch (``Expected more than 1 value per
    channel when training``), and so would the engine, at the end of the first epoch. Say so now,
    at the ``batch`` line, with a batch that does not leave one sample over."""
    def last(b: int) -> int:                        # the last batch, in whole packs
        size = n % b or b
        return size - size % pack

    from cnnspec.engine.ops import BatchNorm

    for model in models:
        batch = last(config.batch) // (pack if model is models[-1] else 1)
        bn = next((name for name in model.live if model.graph.nodes[name]["op"] == "batchnorm"
                   and BatchNorm.one_value_per_channel(batch, model.graph.nodes[name]["output_shape"])), None)
        if bn is None:
            continue
        fits = (b for k in range(1, n + 1) for b in (config.batch + k * pack, config.batch - k * pack)
                if b >= 2 and last(b) not in (1, pack))
        suggestion = next(fits, None)
        one = f"one pack of {pack} pictures" if pack > 1 else "one sample"
        with located(network, "batch", config.from_file):
            raise CnnSpecError(f"the last batch of every epoch holds {one} ({plural(n, 'training sample')} in "
                               f"batches of {config.batch}), but `{bn}` (batchnorm) of `{model.name}` needs more "
                               f"than one value per channel in training, as PyTorch's does",
                               hint=f"choose another batch, e.g. {suggestion}" if suggestion else
                               "use more training samples")


def _predicted(output: np.ndarray) -> np.ndarray:
    return output.reshape(len(output), -1).argmax(axis=1)


def _apply_unfreezing(model, layers, config, epoch: int, echo, announce: bool) -> list:
    """Make the layers of every ``unfreeze_after`` rule whose epochs have passed trainable again;
    return the globs still frozen."""
    still_frozen = list(config.freeze)
    for after, glob in config.unfreeze_after:
        if epoch > after:
            names = match_layers(layers, [glob], "--unfreeze-after")
            model.set_trainable(names, True)
            if announce and epoch == after + 1:
                echo(f"unfreezing {', '.join(names)} after {after} epoch{'s' if after != 1 else ''}")
            still_frozen = [g for g in still_frozen if g != glob]
    return still_frozen


def _load_init(model, path) -> dict:
    """Load what matches from ``path``; per layer, which were loaded, skipped (why) and new."""
    path = Path(path)
    if not path.is_file():
        raise CnnSpecError("no such weights file (--init)", file=str(path))
    report = model.load(path, strict=False)
    layer = lambda key: key.rsplit(".", 1)[0]                                # noqa: E731
    skipped = {}
    for key, reason in report.skipped:
        skipped.setdefault(layer(key), f"{key}: {reason}")
    new = list(dict.fromkeys(layer(k) for k in report.new if layer(k) not in skipped))
    loaded = list(dict.fromkeys(layer(k) for k in report.loaded if layer(k) not in skipped and layer(k) not in new))
    return {"loaded": loaded, "skipped": [[name, why] for name, why in skipped.items()], "new": new}


def _init_line(path, report: dict) -> str:
    """``--init W.npz: loaded 2 layers (conv1, conv2); skipped 1 (dense2.weight: ...); new 1 (dense3)``"""
    loaded, new = report["loaded"], report["new"]
    skipped = [why for _, why in report["skipped"]]
    parts = [f"loaded {plural(len(loaded), 'layer')}" + (f" ({', '.join(loaded)})" if loaded else ""),
             f"skipped {len(skipped)}" + (f" ({'; '.join(skipped)})" if skipped else ""),
             f"new {len(new)}" + (f" ({', '.join(new)})" if new else "")]
    return f"--init {path}: " + "; ".join(parts)


STATE_KEYS = {"network": str, "epoch": int, "batch": int, "config": dict, "rows": list}
# the keys every run's state has, null where there is nothing to keep; a GAN's also has its two
# models' generator states (a classifier's engine_rng may be null)
POSITION_KEYS = ("rng", "sums")
GAN_KEYS = ("engine_rng", "d_engine_rng")
# what reading a damaged part of a state raises (a missing key, a value of another type or range)
DAMAGE = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)


def bad_state(run: Path, keys) -> CnnSpecError:
    """The error for a checkpoint whose state (``state.json``) lacks ``keys`` or holds them damaged."""
    return CnnSpecError(f"cannot resume from this checkpoint: its state has no valid {', '.join(keys)}",
                        file=str(Path(run) / "checkpoint" / checkpoint.RECORD))


@contextmanager
def state_part(run: Path, key: str):
    """Reading ``key`` of the state of ``run``'s checkpoint: what cannot be read is :func:`bad_state`."""
    try:
        yield
    except DAMAGE:
        raise bad_state(run, [key]) from None


def _read_checkpoint(run: Path) -> tuple[dict, dict]:
    """The checkpoint of the run folder ``run``: its parts and its state, checked: every key a
    run's ``restore`` reads is there (its values are checked as they are read)."""
    if not run.is_dir():
        raise CnnSpecError("no checkpoint here to resume: there is no such folder", file=str(run))
    parts, state = checkpoint.load(run / "checkpoint")
    wrong = [key for key, kind in STATE_KEYS.items()
             if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    wrong += [key for key in POSITION_KEYS if key not in state]
    if state.get("task") == "gan":
        wrong += [key for key in GAN_KEYS if not isinstance(state.get(key), dict)]
    if "rows" not in wrong and not all(isinstance(row, dict) for row in state["rows"]):
        wrong.append("rows")
    if "epoch" not in wrong and state["epoch"] < 1:
        wrong.append("epoch")
    if "batch" not in wrong and state["batch"] < 0:
        wrong.append("batch")
    if wrong:
        raise bad_state(run, wrong)
    return parts, state


def read_position(run: Path, state: dict, lengths: tuple, numbers: int) -> tuple:
    """The state's ``rng`` (an epoch's generator state) and ``sums`` (that epoch's sums so far),
    checked: null at the start of an epoch; inside one (``batch`` > 0) a generator state NumPy
    takes and a list of ``lengths[0]`` to ``lengths[1]`` items, the first ``numbers`` of them
    numbers (the rest, a run's task sums, are checked by the run)."""
    rng, values = state["rng"], state["sums"]
    if not state["batch"]:
        return None, None
    with state_part(run, "rng"):
        np.random.default_rng().bit_generator.state = rng
    low, high = lengths
    if (not isinstance(values, list) or not low <= len(values) <= high
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values[:numbers])):
        raise bad_state(run, ["sums"])
    return rng, values


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_logs(out: Path, history: History) -> list:
    """``log.csv`` and ``log.json`` (atomically); returns their paths."""
    fields = list(history.rows[0]) if history.rows else LOG_FIELDS
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for row in history.rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return [atomic.write_text(out / "log.csv", text.getvalue(), what="training log"),
            atomic.write_json(out / "log.json", history.to_json(), what="training log", default=_json_default)]


def frozen_line(globs, layers) -> str:
    """``frozen by --freeze conv*: conv1, basic1.conv1 (2 layers)``: what a glob picked."""
    what = f"frozen by --freeze {' '.join(globs)}: "
    if not layers:
        return what + "nothing (the layers it names have no parameters)"
    return what + f"{', '.join(layers)} ({plural(len(layers), 'layer')})"


def describe_run(history: History, dataset, config: TrainConfig) -> str:
    """``training on shapes: 7200 train / 800 val samples ...; sgd(lr=0.05, momentum=0.9), 5 epochs ...``"""
    text = (f"{history.network}: training on {dataset.describe()}\n"
            f"  {config.describe_optimizer()}, loss {config.loss}, {plural(config.epochs, 'epoch')}, "
            f"batch {config.batch}, seed {config.seed}")
    if config.augment:
        text += f", augment {describe_augment(config.augment)}"
    if config.freeze:
        text += f", frozen {' '.join(config.freeze)}"
    fit = describe_fit(config, has_validation=len(dataset.x_val) > 0)
    return text + (f"\n  {fit}" if fit else "")
