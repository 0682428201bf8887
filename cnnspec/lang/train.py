"""The ``train`` section -> a plain dict (``graph.graph["train"]``).

One ``key = value`` per line; every key is optional::

    train {
        data      = shapes                  # built-in data set: shapes, digits
        data      = mnist:data/mnist        # KIND:PATH, no spaces: mnist, cifar10, folder
        data      = "my data/train.npz"     # any path (or KIND:PATH with spaces) in double quotes
        loss      = cross_entropy           # or mse
        optimizer = sgd(lr=0.05, momentum=0.9)               # sgd(lr, momentum, weight_decay)
        optimizer = adam(lr=1e-3, betas=(0.9, 0.999))        # adam(lr, betas, weight_decay)
        epochs    = 5
        batch     = 64
        seed      = 0
        val_split = 0.1
        augment   = [flip, rotate(10), shift(2)]  # flip, vflip, rotate(deg), shift(px),
                                                  # scale(lo, hi), noise(std)
        task      = reconstruct             # classify, reconstruct, segment, gan (dsl.md §10.4)
        corrupt   = [noise(0.3)]            # like augment, on the input only (reconstruct)
        generator = Generator               # gan: network names of the file
        discriminator = Discriminator
        latent    = 64                      # gan: the size of the generator's noise input
        d_steps   = 1                       # gan: discriminator steps per generator step
        g_ema     = 0.999                   # gan: sample from a moving average of the generator
        pack      = 2                       # gan: the discriminator judges 2 pictures at a time (PacGAN)
    }

Values become plain Python: ``data`` and ``loss`` str (``data`` exactly as written, e.g.
``"mnist:data/mnist"``); ``optimizer`` ``{"name": "sgd", "lr": 0.05, "momentum": 0.9}`` with only
the arguments written (positional ones take the names in the order above); ``epochs``, ``batch``,
``seed`` int; ``val_split`` float; ``augment`` and ``corrupt`` lists of ``(name, args tuple)``;
``task``, ``generator`` and ``discriminator`` str; ``latent``, ``d_steps`` and ``pack`` int; ``g_ema``
float (``g_ema`` and ``pack`` are cnnspec's additions: dsl.md does not name them). Defaults are
filled in by the trainer, not here. ``generator``/``discriminator`` must name networks of the file
and come with ``task = gan`` (which needs both); ``latent`` must match the size of the
generator's first input.

The keys cnnspec adds where dsl.md is silent (``schedule``, ``warmup``, ``monitor``, ``patience``,
``min_delta``, ``restore_best_weights``, ``clip_grad_norm``, ``top_k``; ``adamw`` among the
optimizers) are converted by :mod:`cnnspec.lang.fitting`.
"""
from __future__ import annotations

from cnnspec.errors import error_at, nearest
from cnnspec.lang import ast
from cnnspec.lang.fitting import FIT_KEYS, FitSettings

OPTIMIZERS = {"sgd": ("lr", "momentum", "weight_decay"), "adam": ("lr", "betas", "weight_decay"),
              "adamw": ("lr", "betas", "weight_decay")}
AUGMENTS = {"flip": (), "vflip": (), "rotate": ("deg",), "shift": ("px",), "scale": ("lo", "hi"),
            "noise": ("std",), "mask": ("p",), "erase": ("lo", "hi")}
LOSSES = ("cross_entropy", "mse", "bce", "l1")
TASKS = ("classify", "reconstruct", "segment", "gan")
GAN_KEYS = ("generator", "discriminator", "latent", "d_steps", "g_optimizer", "d_optimizer", "g_ema", "pack")
# what each task trains with (the first loss is its default, dsl.md §10.4) and what it can monitor
# for best.npz and early stopping (the first is the default); a GAN keeps no best epoch
TASK_LOSSES = {"classify": ("cross_entropy", "mse"), "reconstruct": ("mse", "l1", "bce"),
               "segment": ("cross_entropy",), "gan": ("bce", "mse")}
TASK_MONITORS = {"classify": ("val_loss", "val_acc", "train_loss", "train_acc"),
                 "reconstruct": ("val_psnr", "val_loss", "train_psnr", "train_loss"),
                 "segment": ("val_miou", "val_loss", "val_acc", "train_miou", "train_loss", "train_acc"),
                 "gan": ()}
LOSS_WORDS = {"cross_entropy": "class labels (per pixel for segmentation)", "mse": "mean squared error",
              "l1": "mean absolute error", "bce": "binary cross-entropy"}
KEYS = ("data", "loss", "optimizer", "epochs", "batch", "seed", "val_split", "augment",
        "task", "corrupt", *GAN_KEYS)
KEYS += FIT_KEYS


def train_config(train: ast.Train, sources: dict, networks: dict | None = None) -> tuple[dict, dict]:
    """The settings as plain values, and where each was written ({key: Pos}). ``networks`` are
    the file's networks by name (``ast.Network``), which ``generator`` and ``discriminator`` name."""
    return Settings(sources, networks or {}).convert(train)


GAN_AUGMENT = ("`augment` is not a setting of `task = gan`: the discriminator sees the real pictures "
               "as they are")


class Settings(FitSettings):
    """Converts and checks the settings of one train section."""

    def __init__(self, sources: dict, networks: dict | None = None):
        self.sources = sources
        self.networks = networks or {}

    def fail(self, pos, message, hint=None):
        return error_at(pos, message, sources=self.sources, hint=hint)

    def unknown(self, word, options, what, pos):
        guess = nearest(word, options)
        return self.fail(pos, f"unknown {what} `{word}`",
                         hint=f"did you mean `{guess}`?" if guess else f"choose from: {', '.join(options)}")

    def plain(self, node):
        if isinstance(node, ast.Literal):
            return node.value
        if isinstance(node, ast.Name):
            return node.name
        if isinstance(node, ast.TupleOf):
            return tuple(self.plain(item) for item in node.items)
        if isinstance(node, ast.ListOf):
            return [self.plain(item) for item in node.items]
        raise self.fail(node.pos, "expected a number, a word, a tuple or a list here")

    def number(self, node, what, integer=False):
        v = self.plain(node)
        if type(v) is not int and (integer or type(v) is not float):
            raise self.fail(node.pos, f"{what} must be {'an integer' if integer else 'a number'}, got {v!r}")
        return v

    def convert(self, train: ast.Train) -> tuple[dict, dict]:
        config, where = {}, {}
        for setting in train.settings:
            key, value = setting.key, setting.value
            if key not in KEYS:
                raise self.unknown(key, KEYS, "train setting", setting.key_pos)
            if key in config:
                raise self.fail(setting.key_pos, f"`{key}` is set twice",
                                hint=f"first at line {where[key].line}")
            where[key] = setting.pos
            config[key] = getattr(self, key)(value)
        self.check_together(config, where)
        self.check_task(config, where, train)
        return config, where

    def data(self, value) -> str:
        if isinstance(value, ast.Attribute):
            path = f"{value.name}.{value.attr}"
            raise self.fail(value.pos, f"`{path}` looks like a file name: write it in double quotes",
                            hint=f'data = "{path}"')
        if not (isinstance(value, ast.Name) or isinstance(value, ast.Literal) and type(value.value) is str):
            raise self.fail(value.pos, "`data` is a data set name, KIND:PATH or a quoted path",
                            hint='e.g. data = shapes, data = mnist:data/mnist, data = "train.npz"')
        return self.plain(value)

    def loss(self, value) -> str:
        if not isinstance(value, ast.Name):
            raise self.fail(value.pos, f"`loss` is one of: {', '.join(LOSSES)}")
        if value.name not in LOSSES:
            raise self.unknown(value.name, LOSSES, "loss", value.pos)
        return value.name

    def epochs(self, value) -> int:
        return self.count(value, "epochs", 1)

    def batch(self, value) -> int:
        return self.count(value, "batch", 1)

    def seed(self, value) -> int:
        return self.count(value, "seed", 0)

    def count(self, value, what, minimum) -> int:
        n = self.number(value, what, integer=True)
        if n < minimum:
            raise self.fail(value.pos, f"{what} must be at least {minimum}, got {n}")
        return n

    def val_split(self, value) -> float:
        split = self.number(value, "val_split")
        if not 0 <= split < 1:
            raise self.fail(value.pos, f"val_split must be at least 0 and below 1, got {split}")
        return float(split)

    def optimizer(self, value) -> dict:
        """``sgd(lr=0.05, momentum=0.9)`` -> ``{"name": "sgd", "lr": 0.05, "momentum": 0.9}``."""
        if not isinstance(value, (ast.Name, ast.Call)):
            raise self.fail(value.pos, "`optimizer` is sgd(...), adam(...) or adamw(...)",
                            hint="e.g. sgd(lr=0.05, momentum=0.9)")
        if value.name not in OPTIMIZERS:
            raise self.unknown(value.name, list(OPTIMIZERS), "optimizer", value.pos)
        names = OPTIMIZERS[value.name]
        return self.arguments(value, [(name, "betas" if name == "betas" else "number") for name in names],
                              positional=len(names))

    def task(self, value) -> str:
        if not isinstance(value, ast.Name):
            raise self.fail(value.pos, f"`task` is one of: {', '.join(TASKS)}")
        if value.name not in TASKS:
            raise self.unknown(value.name, TASKS, "task", value.pos)
        return value.name

    def generator(self, value) -> str:
        return self.network_name(value, "generator")

    def discriminator(self, value) -> str:
        return self.network_name(value, "discriminator")

    def network_name(self, value, key) -> str:
        if not isinstance(value, ast.Name):
            raise self.fail(value.pos, f"`{key}` is the name of a network of this file",
                            hint=f"e.g. {key} = {key.capitalize()}")
        if value.name not in self.networks:
            names = list(self.networks)
            guess = nearest(value.name, names)
            raise self.fail(value.pos, f"no network `{value.name}` in this file",
                            hint=f"did you mean `{guess}`?" if guess else
                            (f"its networks are: {', '.join(names)}" if names else None))
        return value.name

    def latent(self, value) -> int:
        return self.count(value, "latent", 1)

    def d_steps(self, value) -> int:
        return self.count(value, "d_steps", 1)

    def pack(self, value) -> int:
        """PacGAN's packing degree m: the discriminator judges m pictures at a time (>= 1)."""
        return self.count(value, "pack", 1)

    def g_ema(self, value) -> float:
        """The decay d of the generator's exponential moving average, 0 < d < 1."""
        decay = self.number(value, "g_ema")
        if not 0 < decay < 1:
            raise self.fail(value.pos, f"g_ema is the decay of the generator's moving average: a number between "
                                       f"0 and 1, got {decay}", hint="e.g. g_ema = 0.999")
        return float(decay)

    def g_optimizer(self, value) -> dict:
        """The generator's own optimizer (default: ``optimizer``)."""
        return self.optimizer(value)

    def d_optimizer(self, value) -> dict:
        """The discriminator's own optimizer (default: ``optimizer``)."""
        return self.optimizer(value)

    def corrupt(self, value) -> list:
        """``[noise(0.3)]``: augmentations of the input only (``task = reconstruct``)."""
        return self.augment(value)

    def check_task(self, config: dict, where: dict, train: ast.Train):
        """The settings that belong to a task come with it; a GAN names its two networks, and
        ``latent`` is the size of the generator's first input."""
        task = config.get("task", "classify")
        for key in GAN_KEYS:
            if key in config and task != "gan":
                raise self.fail(where[key], f"`{key}` is a setting of `task = gan`",
                                hint=f"this section's task is {task}" + ("" if "task" in config
                                                                         else " (the default)"))
        if "corrupt" in config and task != "reconstruct":
            raise self.fail(where["corrupt"], "`corrupt` is a setting of `task = reconstruct` "
                                              "(it spoils the input, the target stays clean)",
                            hint="use `augment` to vary the training samples of other tasks")
        if "augment" in config and task == "gan":
            raise self.fail(where["augment"], GAN_AUGMENT)
        if "loss" in config and config["loss"] not in TASK_LOSSES[task]:
            raise self.fail(where["loss"], loss_message(config["loss"], task), hint=loss_hint(task))
        if "optimizer" in config and "g_optimizer" in config and "d_optimizer" in config:
            raise self.fail(where["optimizer"], "`optimizer` is used by neither network: `g_optimizer` and "
                                                "`d_optimizer` are both given", hint="drop one of the three")
        if task != "gan":
            return
        missing = [key for key in ("generator", "discriminator") if key not in config]
        if missing:
            raise self.fail(where["task"], f"`task = gan` needs {' and '.join(f'`{k}`' for k in missing)}",
                            hint="name the two networks of the file: generator = G, discriminator = D")
        if config["generator"] == config["discriminator"]:
            raise self.fail(where["discriminator"], "the generator and the discriminator are the same network",
                            hint="a GAN trains two networks against each other")
        if "latent" in config:
            generator = self.networks[config["generator"]]
            first = next((s for s in generator.body if isinstance(s, ast.Input)), None)
            if first is not None:
                size = 1
                for v in first.shape:
                    size *= v
                if size != config["latent"]:
                    shape = "x".join(map(str, first.shape))
                    raise self.fail(where["latent"], f"latent = {config['latent']}, but the generator "
                                    f"`{generator.name}` takes `{first.name}: {shape}` ({size} values)",
                                    hint=f"write latent = {size}, or leave it out: it defaults to the "
                                         "generator's input")

    def augment(self, value) -> list:
        """``[flip, rotate(10)]`` -> ``[("flip", ()), ("rotate", (10,))]``."""
        items = value.items if isinstance(value, ast.ListOf) else [value]
        return [self.augmentation(item) for item in items]

    def augmentation(self, item) -> tuple:
        if not isinstance(item, (ast.Name, ast.Call)):
            raise self.fail(item.pos, "an augmentation is a name such as `flip` "
                                      "or a call such as `rotate(10)`")
        if item.name not in AUGMENTS:
            raise self.unknown(item.name, list(AUGMENTS), "augmentation", item.pos)
        wanted = AUGMENTS[item.name]
        args = getattr(item, "args", [])
        if len(args) != len(wanted) or any(arg.key is not None for arg in args):
            signature = f"{item.name}({', '.join(wanted)})" if wanted else item.name
            raise self.fail(item.pos, f"`{item.name}` takes {len(wanted) or 'no'} argument"
                            f"{'' if len(wanted) == 1 else 's'}", hint=f"write `{signature}`")
        return item.name, tuple(self.number(arg.value, f"the {name} of {item.name}")
                                for arg, name in zip(args, wanted))


def loss_message(loss: str, task: str) -> str:
    """Why ``loss`` does not train ``task``."""
    return f"`loss = {loss}` does not train `task = {task}`: it takes " + \
        " or ".join(f"{name} ({LOSS_WORDS[name]})" for name in TASK_LOSSES[task])


def loss_hint(task: str) -> str:
    return f"leave `loss` out for {TASK_LOSSES[task][0]}, the default of task = {task}"
