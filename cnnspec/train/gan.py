"""Training a GAN (``task = gan``, dsl.md §10.4): a file's generator and discriminator networks
trained in turns, as PyTorch's DCGAN tutorial trains them.

One step, on a batch of n real images x (scaled to [-1, 1] when the generator ends in tanh, kept
in [0, 1] when it ends in sigmoid) and n noise vectors z ~ N(0, I) drawn from the epoch's
generator:

1. fake = G(z), a training-mode forward of the generator, kept for step 3;
2. the discriminator: its gradients of ``loss(D(x), 1)`` and ``loss(D(fake), 0)`` added up (two
   backward passes, the fakes taken as constants), then the discriminator's optimizer steps;
   the logged ``d_loss`` is the sum of the two losses, ``d_real`` the mean of D(x) and ``d_fake``
   the mean of D(G(z)) in this step;
3. every ``d_steps``-th batch, the generator: the non-saturating loss of Goodfellow et al. (2014),
   ``loss(D(fake), 1)`` = -log D(G(z)) for bce, differentiated through the (just updated)
   discriminator, whose parameters do not change, into the generator; its optimizer steps.

Each network has its own optimizer (``g_optimizer``, ``d_optimizer``; default ``optimizer``)
and state. A conditional GAN's generator has an input ``label`` (one-hot, K = the data's
classes) and so does its discriminator: the real images come with their labels, the fakes with
labels drawn uniformly. Each epoch writes ``samples/epoch_NNN.png``, the generator's samples of
the same fixed noise (and labels: a row of eight per class for a conditional GAN).

With ``pack = m`` (PacGAN, Lin et al. 2018; cnnspec's addition) the discriminator judges m
pictures at a time, stacked on the channel axis (its input has m x C channels): each batch's real
pictures and its fakes are reshaped into n/m packs (:meth:`GanRun._packed`), and the gradient of
the generator's loss with respect to the packs is reshaped back onto the n fakes.

With ``g_ema = d`` (cnnspec's addition) the generator that samples is an exponential moving
average of its weights, updated after each of its steps, with batchnorm statistics recomputed
over fixed noise (:meth:`GanRun.sampler`); the sample grids and ``weights.npz`` are drawn from it.

A run directory holds ``weights.npz`` (the generator: what ``cnnspec generate`` reads),
``discriminator.npz``, the logs, ``curves.png``, the sample grids and ``checkpoint/`` (both
networks, both optimizers, the position and generator states: ``--resume`` continues to the
very weights an uninterrupted run reaches). A GAN's losses do not measure its samples: no best
epoch is kept and there is no early stopping.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from cnnspec import atomic
from cnnspec.data import load_dataset
from cnnspec.errors import CnnSpecError, plural
from cnnspec.train import checkpoint
from cnnspec.train.config import TrainConfig, located
from cnnspec.train.loop import Trains
from cnnspec.train.progress import CompileNotice, EpochBar, epoch_line

LABEL = "label"                        # the input name of a conditional GAN's class
SAMPLES = 64                           # the per-epoch sample grid
BN_SAMPLES = 1024                      # g_ema: the noise vectors that recompute its batchnorm statistics


def gan_networks(network, networks: dict | None, config: TrainConfig) -> tuple:
    """(generator, discriminator) Networks named by the train section; ``networks`` (name ->
    Network) defaults to every network of ``network``'s file."""
    if networks is None:
        if not getattr(network, "file", None):
            networks = {network.name: network}
        else:
            import cnnspec

            networks = cnnspec.load_all(network.file)
    found = []
    for key in ("generator", "discriminator"):
        name = getattr(config, key)
        if name is None:
            raise CnnSpecError(f"task = gan needs `{key} = NAME` in the train section", file=network.file)
        if name not in networks:
            with located(network, key, config.from_file):
                raise CnnSpecError(f"no network `{name}` in this file (the {key}); it has "
                                   f"{', '.join(f'`{n}`' for n in networks)}")
        found.append(networks[name])
    if found[0].name == found[1].name:
        with located(network, "discriminator", config.from_file):
            raise CnnSpecError("the generator and the discriminator must be two networks")
    return tuple(found)


class GanRun(Trains):
    """One GAN training run: both models, both optimizers, the data and where the run stands."""

    def __init__(self, generator, discriminator, config: TrainConfig, dataset, out: Path | None,
                 progress: bool, echo, on_batch):
        from cnnspec.train.callbacks import make_optimizer
        from cnnspec.train.loop import History

        self.config, self.out, self.progress, self.echo, self.on_batch = config, out, progress, echo, on_batch
        self.network = generator
        if out is not None:
            atomic.make_folder(out, "run folder")
        if config.augment:
            with located(generator, "augment", config.from_file):
                from cnnspec.lang.train import GAN_AUGMENT
                raise CnnSpecError(GAN_AUGMENT)
        self.g = generator.compile(dtype="float32", seed=config.seed)
        self.d = discriminator.compile(dtype="float32", seed=config.seed + 1)
        self.noise_name, self.image_name, self.conditional = self._check(generator, discriminator, config)
        if dataset is None:
            if config.data_base is None:
                config.data_base = os.getcwd()
            with located(generator, "data", config.from_file):
                dataset = load_dataset(config.data, self.g.output_shape, seed=config.seed, val_split=0.0,
                                       base_dir=config.data_base, task="gan")
        self.dataset = dataset
        if self.conditional:
            k = self.g.input_shapes[LABEL][0]
            if not dataset.classes or int(dataset.y_train.max(initial=0)) >= k or len(dataset.classes) > k:
                with located(generator, "data", config.from_file):
                    raise CnnSpecError(f"a conditional GAN's `label` input is one-hot of size {k}, but the data set "
                                       f"{dataset.spec!r} has {plural(len(dataset.classes), 'class', 'classes')}",
                                       hint=f"give both networks `input label: {len(dataset.classes) or 'K'}`"
                                            if dataset.classes else "use data with labels (shapes, a .npz with y)")
        if len(dataset.x_train) < config.pack:
            with located(generator, "pack", config.from_file):
                raise CnnSpecError(f"pack = {config.pack}, but the data set {dataset.spec!r} has only "
                                   f"{plural(len(dataset.x_train), 'training picture')}: not one whole pack")
        from cnnspec.train.loop import check_last_batch
        check_last_batch(generator, config, [self.g, self.d], len(dataset.x_train), config.pack)
        self.tanh = self.g._plan(1).final_op == "tanh"
        # g_ema: the moving average of the generator's weights (None before its first step), and
        # the model that samples with it
        self.ema = None
        self.g_avg = generator.compile(dtype="float32", seed=config.seed) if config.g_ema is not None else None
        self.g_avg_rng = None if self.g_avg is None else self.g_avg.rng.bit_generator.state
        self.optimizer_g = make_optimizer(self.g, _with_optimizer(config, config.g_optimizer))
        self.optimizer_d = make_optimizer(self.d, _with_optimizer(config, config.d_optimizer))
        self.history = History(generator.name, config, classes=list(dataset.classes), out=out, dataset=dataset,
                               model=self.g, data={"spec": dataset.spec, "sample_shape": list(dataset.sample_shape),
                                                   "train": len(dataset.x_train), "val": 0, "test": None})
        self.history.discriminator = self.d
        self.epoch, self.batch, self.rng_state, self.sums = 1, 0, None, None
        self.resumed = self.finished = False
        # the sample grid: 64 noise vectors, or 8 per class in a row each for a conditional GAN
        k = self.g.input_shapes[LABEL][0] if self.conditional else 0
        rng = np.random.default_rng([config.seed, 0x6A7])
        self.fixed_z = rng.standard_normal((8 * k if k else SAMPLES, *self.g.input_shapes[self.noise_name]))
        self.fixed_z = self.fixed_z.astype(np.float32)
        self.fixed_labels = np.repeat(np.arange(k), 8) if k else None

    # -- checks ----------------------------------------------------------------------------------

    def _check(self, generator, discriminator, config):
        g, d = self.g, self.d
        noise = [name for name in g.input_names if name != LABEL]
        image = [name for name in d.input_names if name != LABEL]
        if len(noise) != 1:
            with located(generator, "generator", config.from_file):
                raise CnnSpecError(f"the generator `{g.name}` must have one noise input (and optionally "
                                   f"`input label: K`); it has {', '.join(g.input_names)}")
        if len(image) != 1:
            with located(generator, "discriminator", config.from_file):
                raise CnnSpecError(f"the discriminator `{d.name}` must have one image input (and optionally "
                                   f"`input label: K`); it has {', '.join(d.input_names)}")
        conditional = LABEL in g.input_names
        if conditional != (LABEL in d.input_names):
            which = "generator" if conditional else "discriminator"
            with located(generator, "discriminator", config.from_file):
                raise CnnSpecError(f"a conditional GAN gives the label to both networks: only the {which} has "
                                   f"`input label`", hint="add `input label: K` to the other network too")
        if conditional and g.input_shapes[LABEL] != d.input_shapes[LABEL]:
            with located(generator, "discriminator", config.from_file):
                raise CnnSpecError(f"the label inputs differ: {g.input_shapes[LABEL]} in the generator, "
                                   f"{d.input_shapes[LABEL]} in the discriminator")
        if conditional and len(g.input_shapes[LABEL]) != 1:
            with located(generator, "generator", config.from_file):
                raise CnnSpecError("`input label` is one-hot: a vector of K values (input label: 10)")
        m = config.pack
        if m > 1 and conditional:
            with located(generator, "pack", config.from_file):
                raise CnnSpecError("pack is for an unconditional GAN: a conditional one's discriminator judges "
                                   "one picture with its label", hint="drop `pack`")
        if m > 1 and config.batch % m:
            with located(generator, "pack", config.from_file):
                raise CnnSpecError(f"pack = {m}: the batch ({config.batch}) must be a whole number of packs of {m}",
                                   hint=f"e.g. batch = {max(m, config.batch - config.batch % m)}")
        packed = (g.output_shape[0] * m, *g.output_shape[1:])
        if m > 1 and tuple(d.input_shapes[image[0]]) != packed:
            with located(generator, "pack", config.from_file):
                raise CnnSpecError(f"pack = {m}: the discriminator judges {m} pictures stacked on the channel axis, "
                                   f"so it must take {_fmt(packed)}: {m} x {g.output_shape[0]} channels; it takes "
                                   f"{_fmt(d.input_shapes[image[0]])}",
                                   hint=f"declare its input as `input {image[0]}: {_fmt(packed)}`")
        elif m == 1 and tuple(g.output_shape) != tuple(d.input_shapes[image[0]]):
            with located(generator, "discriminator", config.from_file):
                raise CnnSpecError(f"the generator makes {_fmt(g.output_shape)} pictures but the discriminator "
                                   f"takes {_fmt(d.input_shapes[image[0]])}")
        if math.prod(d.output_shape) != 1:
            with located(generator, "discriminator", config.from_file):
                raise CnnSpecError(f"the discriminator must give one value per picture (real or fake); its output "
                                   f"is {_fmt(d.output_shape)}", hint="end it in dense(1) -> sigmoid")
        size = math.prod(g.input_shapes[noise[0]])
        if config.latent is not None and config.latent != size:
            with located(generator, "latent", config.from_file):
                raise CnnSpecError(f"latent = {config.latent}, but the generator's noise input `{noise[0]}` has "
                                   f"{size} values ({_fmt(g.input_shapes[noise[0]])})")
        final = g._plan(1).final_op
        if final not in ("tanh", "sigmoid"):
            with located(generator, "generator", config.from_file):
                raise CnnSpecError(f"the generator must end in tanh (pictures in [-1, 1]) or sigmoid ([0, 1]); "
                                   f"`{g.name}` ends in {final}")
        return noise[0], image[0], conditional

    # -- resume ----------------------------------------------------------------------------------

    def restore(self, run: Path, parts: dict, state: dict) -> None:
        from cnnspec.train.loop import read_position, state_part

        folder = str(run / "checkpoint")
        for name in ("weights", "discriminator", "optimizer", "d_optimizer"):
            if name not in parts:
                raise CnnSpecError(f"the checkpoint has no {name}", file=folder)
        try:
            self.g.load_arrays(parts["weights"], source=folder)
            self.d.load_arrays(parts["discriminator"], source=folder)
            self.optimizer_g.load_state_dict(parts["optimizer"])
            self.optimizer_d.load_state_dict(parts["d_optimizer"])
            if self.g_avg is not None and "g_ema" in parts:
                self.ema = _ema_of(parts["g_ema"], self.g._flat_params, folder)
        except CnnSpecError as exc:
            raise CnnSpecError(exc.message, file=folder, hint=exc.hint) from None
        self.history.rows = state["rows"]
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.rng_state, self.sums = read_position(run, state, lengths=(7, 7), numbers=7)
        for model, key in ((self.g, "engine_rng"), (self.d, "d_engine_rng")):
            with state_part(run, key):
                model.rng.bit_generator.state = state[key]
        self.resumed, self.finished = True, bool(state.get("finished"))
        self.note_checkpoint(run)

    # -- the run ---------------------------------------------------------------------------------

    def _train(self):
        from cnnspec.train.loop import StopRequest

        config, history = self.config, self.history
        if self.resumed:
            if self.epoch > config.epochs:
                if self.finished:
                    done = self.epoch - 1
                    raise CnnSpecError(f"this run has already trained for {plural(done, 'epoch')}: there is "
                                       f"nothing to resume", file=str(self.out),
                                       hint=f"give --epochs N with N > {done} to train it further")
                self.write_final()
                return history
            self.echo(f"resuming {self.out} at epoch {self.epoch}, batch {self.batch}")
        else:
            self.echo(self.describe())
        with CompileNotice() as notice:
            self.warm_up()
        history.compile_seconds = notice.seconds if notice.shown else None
        with StopRequest() as stop:
            while self.epoch <= config.epochs:
                finished = self.train_epoch(stop)
                if not finished or (stop.requested and self.epoch <= config.epochs):
                    history.interrupted = True
                    where = (f"in epoch {self.epoch} after batch {self.batch}/{self.n_batches}" if not finished
                             else f"after epoch {self.epoch - 1}")
                    saved = (f": checkpoint saved in {self.out / 'checkpoint'}; continue with --resume {self.out}"
                             if self.out is not None else "")
                    self.echo(f"interrupted {where}{saved}")
                    return history
            self.write_final()
        return history

    def describe(self) -> str:
        config = self.config
        g_opt = _with_optimizer(config, config.g_optimizer).describe_optimizer()
        d_opt = _with_optimizer(config, config.d_optimizer).describe_optimizer()
        kind = "conditional GAN" if self.conditional else "GAN"
        return (f"{kind} {self.g.name} / {self.d.name}: training on {self.dataset.describe()}\n"
                f"  generator {g_opt}, discriminator {d_opt}, loss {config.loss}, "
                f"{plural(config.epochs, 'epoch')}, batch {config.batch}, d_steps {config.d_steps}, seed {config.seed}"
                f"{'' if config.g_ema is None else f', g_ema {config.g_ema:g}'}"
                f"{'' if config.pack == 1 else f', pack {config.pack}'}; "
                f"real pictures scaled to {'[-1, 1] (the generator ends in tanh)' if self.tanh else '[0, 1]'}")

    def warm_up(self) -> None:
        """Compile the kernels both steps use before the first batch (weights and states kept)."""
        saved = [(m, m._flat_params.copy(), m.rng.bit_generator.state,
                  {layer: {k: v.copy() for k, v in group.items()} for layer, group in m.state.items()})
                 for m in (self.g, self.d)]
        try:
            m = self.config.pack
            n = 2 * m if len(self.dataset.x_train) >= 2 * m else m
            z, labels = self._noise(np.random.default_rng(0), n)
            real = self.dataset.x_train[:n]
            self._d_step(self._real_inputs(real, self.dataset.y_train[:n]), self.g.forward_train(z), labels,
                         step=False)
            self._g_step(labels, step=False)
            self.g.forward({k: v[:1] for k, v in z.items()}, batch=1)
        finally:
            for model, params, rng, state in saved:
                model._flat_params[...] = params
                model.rng.bit_generator.state = rng
                for layer, group in state.items():
                    for k, v in group.items():
                        model.state[layer][k][...] = v
                model._flat_grads[...] = 0

    @property
    def n_batches(self) -> int:
        return -(-len(self.dataset.x_train) // self.config.batch)

    def _one_hot(self, labels) -> np.ndarray:
        k = self.g.input_shapes[LABEL][0]
        return np.eye(k, dtype=np.float32)[labels]

    def _noise(self, rng, n: int) -> tuple:
        """The generator's inputs for ``n`` fakes (noise, and labels drawn uniformly) and the labels."""
        z = rng.standard_normal((n, *self.g.input_shapes[self.noise_name])).astype(np.float32)
        if not self.conditional:
            return {self.noise_name: z}, None
        labels = rng.integers(0, self.g.input_shapes[LABEL][0], n)
        return {self.noise_name: z, LABEL: self._one_hot(labels)}, labels

    def _packed(self, pictures) -> np.ndarray:
        """``pack = m`` (PacGAN, Lin et al. 2018): n pictures C x H x W -> n/m packs of m x C
        channels, each pack m consecutive pictures stacked on the channel axis."""
        m = self.config.pack
        return pictures if m == 1 else pictures.reshape(len(pictures) // m, m * pictures.shape[1], *pictures.shape[2:])

    def _real_inputs(self, x, y) -> dict:
        x = x * 2 - 1 if self.tanh else x
        return {self.image_name: self._packed(x), **({LABEL: self._one_hot(y)} if self.conditional else {})}

    def _fake_inputs(self, fake, labels) -> dict:
        return {self.image_name: self._packed(fake), **({LABEL: self._one_hot(labels)} if self.conditional else {})}

    def _d_step(self, real: dict, fake, labels, step: bool = True) -> tuple:
        """The discriminator's step: (d_loss, mean D(x), mean D(G(z)))."""
        n_real, n_fake = len(real[self.image_name]), len(fake) // self.config.pack
        loss = self.config.loss
        real_loss = self.d.backprop(real, np.ones((n_real, *self.d.output_shape), np.float32), loss)
        d_real = float(np.mean(self.d.last_output))
        fake_loss = self.d.backprop(self._fake_inputs(fake, labels), np.zeros((n_fake, *self.d.output_shape),
                                                                               np.float32), loss, accumulate=True)
        d_fake = float(np.mean(self.d.last_output))
        if step:
            self.optimizer_d.step()
        return real_loss + fake_loss, d_real, d_fake

    def _g_step(self, labels, step: bool = True) -> float:
        """The generator's step on the fakes of its last training forward: the non-saturating loss."""
        pending = self.g._pending
        fake = pending.plan.output.copy()
        n = len(fake) // self.config.pack
        loss = self.d.backprop(self._fake_inputs(fake, labels), np.ones((n, *self.d.output_shape), np.float32),
                               self.config.loss, inputs=(self.image_name,), params=False)
        self.g._pending = pending                 # D's run does not touch G; kept explicit
        self.g.backward(self.d.input_grads[self.image_name].reshape(fake.shape))
        if step:
            self.optimizer_g.step()
            if self.g_avg is not None:
                self._average()
        return loss

    def _average(self) -> None:
        """g_ema = d: after each generator step, ema = d * ema + (1 - d) * weights (the first step
        copies the weights): PyTorch's ``AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(d))``."""
        weights = self.g._flat_params
        if self.ema is None:
            self.ema = weights.copy()
        else:
            self.ema += np.float32(1 - self.config.g_ema) * (weights - self.ema)

    def sampler(self):
        """The generator that samples: the trained one, or with ``g_ema`` a copy holding the moving
        average of its weights, whose batchnorm running statistics are recomputed over BN_SAMPLES
        fresh noise vectors in batches of ``batch`` (``update_bn`` of ``torch.optim.swa_utils``:
        averaged weights have no statistics of their own), the same noise every time."""
        if self.g_avg is None:
            return self.g
        model = self.g_avg
        model._flat_params[...] = self.g._flat_params if self.ema is None else self.ema
        if model.state:
            model.rng.bit_generator.state = self.g_avg_rng
            rng, n = np.random.default_rng([self.config.seed, 0xB4]), self.config.batch
            model.update_batchnorm(self._noise(rng, n)[0] for _ in range(-(-BN_SAMPLES // n)))
        return model

    def train_epoch(self, stop) -> bool:
        config, epoch = self.config, self.epoch
        x, y, batch = self.dataset.x_train, self.dataset.y_train, config.batch
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(x))
        d_sum, g_sum, real_sum, fake_sum, seen, g_steps, seconds = 0.0, 0.0, 0.0, 0.0, 0, 0, 0.0
        if self.batch:
            rng.bit_generator.state = self.rng_state
            d_sum, g_sum, real_sum, fake_sum, seen, g_steps, seconds = self.sums
        bar = EpochBar(epoch, config.epochs, self.n_batches, self.batch, enabled=self.progress)
        for b in range(self.batch, self.n_batches):
            tick = time.perf_counter()
            index = order[b * batch:(b + 1) * batch]
            index = index[:len(index) - len(index) % config.pack]    # pack: the last batch in whole packs
            if not len(index):
                continue
            z, labels = self._noise(rng, len(index))
            fake = self.g.forward_train(z)
            d_loss, d_real, d_fake = self._d_step(self._real_inputs(x[index], y[index]), fake, labels)
            g_loss = None
            if (b + 1) % config.d_steps == 0:
                g_loss = self._g_step(labels)
                g_sum += g_loss
                g_steps += 1
            for value, what in ((d_loss, "the discriminator's"), (g_loss, "the generator's")):
                if value is not None and not math.isfinite(value):
                    bar.close()
                    raise CnnSpecError(f"training diverged: {what} loss became {value} in epoch {epoch}, batch "
                                       f"{b + 1}/{self.n_batches}" + self.kept_text(),
                                       hint=f"try a lower learning rate (--lr {config.lr / 10:g})")
            seconds += time.perf_counter() - tick
            d_sum += d_loss * len(index)
            real_sum += d_real * len(index)
            fake_sum += d_fake * len(index)
            seen += len(index)
            bar.update(d_sum / seen, None, seen / max(seconds, 1e-9))
            if self.on_batch is not None:
                self.on_batch(epoch, b, d_loss)
            if stop.requested and b + 1 < self.n_batches:
                bar.close()
                self.batch, self.rng_state = b + 1, rng.bit_generator.state
                self.sums = [d_sum, g_sum, real_sum, fake_sum, seen, g_steps, seconds]
                self.save_checkpoint()
                return False
        bar.close()
        row = {"epoch": epoch, "d_loss": d_sum / seen, "g_loss": g_sum / max(g_steps, 1) if g_steps else None,
               "d_real": real_sum / seen, "d_fake": fake_sum / seen,
               "g_lr": self.optimizer_g.lr, "d_lr": self.optimizer_d.lr,
               "seconds": round(seconds, 3), "samples_per_s": round(seen / max(seconds, 1e-9), 1)}
        self.history.rows.append(row)
        if self.out is not None:
            self.write_samples(epoch)
        self.echo(epoch_line({**row, "g_loss": row["g_loss"] if row["g_loss"] is not None else float("nan")},
                             config.epochs))
        self.epoch, self.batch, self.rng_state, self.sums = epoch + 1, 0, None, None
        self.save_checkpoint()
        return True

    def samples(self) -> np.ndarray:
        """The generator's pictures (evaluation mode) of the fixed noise, in [0, 1]."""
        inputs = {self.noise_name: self.fixed_z}
        if self.conditional:
            inputs[LABEL] = self._one_hot(self.fixed_labels)
        out = self.sampler().forward(inputs)
        return (out + 1) / 2 if self.tanh else out

    def write_samples(self, epoch: int) -> None:
        from cnnspec.render.tasks import save_grid

        folder = self.out / "samples"
        atomic.make_folder(folder, "samples folder")
        pictures = self.samples()
        atomic.write_atomic(folder / f"epoch_{epoch:03d}.png", lambda tmp: save_grid(pictures, tmp, columns=8),
                            what="sample grid")

    # -- files -----------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        if self.out is None:
            return
        from cnnspec.train.loop import _json_default, _write_logs

        parts = {"weights": self.g.arrays(), "discriminator": self.d.arrays(),
                 "optimizer": self.optimizer_g.state_dict(), "d_optimizer": self.optimizer_d.state_dict()}
        if self.ema is not None:
            parts["g_ema"] = {"weights": self.ema}
        state = {"network": self.g.name, "file": self.network.file, "task": "gan", "epoch": self.epoch,
                 "batch": self.batch, "rng": self.rng_state, "sums": self.sums,
                 "engine_rng": self.g.rng.bit_generator.state, "d_engine_rng": self.d.rng.bit_generator.state,
                 "config": self.config.to_json(), "rows": self.history.rows, "init": None, "finished": False}
        checkpoint.save(self.out / "checkpoint", parts, state, default=_json_default)
        self.note_checkpoint(self.out)
        _write_logs(self.out, self.history)

    def write_final(self) -> None:
        """weights.npz: the generator that samples (with ``g_ema`` the averaged one, which is also
        the History's model; the trained weights stay in the checkpoint)."""
        self.history.model = sampler = self.sampler()
        if self.out is None:
            return
        from cnnspec.render.pictures import plot_curves
        from cnnspec.train.loop import _json_default, _write_logs

        out, history = self.out, self.history
        written = [sampler.save(out / "weights.npz"), self.d.save(out / "discriminator.npz")]
        written += _write_logs(out, history)
        written.append(atomic.write_atomic(out / "curves.png", lambda tmp: plot_curves(history.rows, tmp),
                                           what="training curves"))
        if self.kept is None or self.kept[0] != out:    # no epoch ran (--epochs 0): not an earlier
            self.save_checkpoint()                       # run's checkpoint marked finished
        checkpoint.update_state(out / "checkpoint", default=_json_default, finished=True)
        history.written = [Path(p) for p in written]


def _with_optimizer(config: TrainConfig, optimizer: dict | None) -> TrainConfig:
    """``config`` with the optimizer ``optimizer`` ({"name", args}; None: config's own)."""
    if optimizer is None:
        return config
    from dataclasses import replace

    args = {k: v for k, v in optimizer.items() if k != "name"}
    return replace(config, optimizer=optimizer["name"], optimizer_args=args)


def _ema_of(part: dict, weights: np.ndarray, folder: str) -> np.ndarray:
    """The checkpoint's moving average of the generator's weights, checked against them."""
    ema = part.get("weights")
    if ema is None or ema.shape != weights.shape or ema.dtype != weights.dtype:
        raise CnnSpecError("the checkpoint's g_ema part does not match the generator", file=folder)
    return ema.copy()


def _fmt(shape) -> str:
    return "x".join(map(str, shape))
