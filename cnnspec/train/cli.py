"""``cnnspec train``, ``cnnspec evaluate`` and ``cnnspec run``: thin faces over :mod:`cnnspec.train`.

Nothing heavy is imported here at import time (no numba, no matplotlib): each handler imports
what it needs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cnnspec.commands import add_network_option
from cnnspec.errors import CnnSpecError

MAX_DEFAULT_LAYERS = 8           # layers `run --feature-maps` draws when --layers is not given
DATA_HELP = ("data set: shapes (default), shapes:CLASS,...[,n=N], digits, PATH.npz, mnist:DIR, "
             "cifar10:DIR, folder:DIR")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a network on a data set",
        description="Train a network. The file's train section gives the defaults; flags override them. "
                    "Writes weights.npz, log.csv, log.json and curves.png to --out. Ctrl-C stops after "
                    "the current batch and saves a checkpoint that --resume continues.")
    train.add_argument("file", help="the .cnn file")
    add_network_option(train)
    train.add_argument("--data", help=DATA_HELP)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch", type=int)
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--optimizer", help="sgd, adam, or with arguments: 'sgd(lr=0.05, momentum=0.9)'")
    train.add_argument("--momentum", type=float, help="SGD momentum")
    train.add_argument("--loss", choices=("cross_entropy", "mse", "bce", "l1"))
    train.add_argument("--seed", type=int)
    train.add_argument("--val-split", type=float, help="fraction of the training data held out for validation")
    train.add_argument("--augment", nargs="+", action="extend", metavar="STEP",
                       help="flip vflip 'rotate(DEG)' 'shift(PX)' 'scale(LO,HI)' 'noise(STD)', or none")
    train.add_argument("--init", metavar="W.npz", help="start from these weights where names and shapes match")
    train.add_argument("--freeze", nargs="+", action="extend", metavar="GLOB",
                       help="keep the parameters of matching layers fixed: a layer's full name, a block "
                            "instance (all its layers), or a glob: 'conv*' (every conv, in blocks too), "
                            "'basic1.*'")
    train.add_argument("--unfreeze-after", action="append", metavar="N:GLOB",
                       help="make matching frozen layers trainable after N epochs, e.g. 3:conv5*")
    add_fit_flags(train)
    train.add_argument("--out", metavar="DIR", help="run directory (default: runs/<network>-<timestamp>)")
    train.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=train_command)

    evaluate = subparsers.add_parser(
        "evaluate", help="accuracy, per-class accuracy and confusion matrix of trained weights",
        description="Evaluate trained weights on a data split: the test split where the data set has one, "
                    "else the validation split (the same samples training held out: data, seed and val_split "
                    "come from the log.json beside the weights, else from the file's train section).")
    evaluate.add_argument("file", help="the .cnn file")
    add_network_option(evaluate)
    evaluate.add_argument("--weights", required=True, metavar="W.npz",
                          help="a weights file, or a run directory (its best.npz, else its weights.npz)")
    evaluate.add_argument("--partial", action="store_true",
                          help="load the weights whose names and shapes match, keep the others at their "
                               "initial values (weights of another network)")
    evaluate.add_argument("--data", help=DATA_HELP)
    evaluate.add_argument("--split", choices=("train", "val", "test"))
    evaluate.add_argument("--seed", type=int)
    evaluate.add_argument("--val-split", type=float)
    evaluate.add_argument("--top-k", type=int, metavar="K",
                          help="also report top-K accuracy (default: the run's or the file's top_k)")
    evaluate.add_argument("--plot", metavar="PNG", help="draw the confusion matrix (over pixels for task = segment; "
                                                        "reconstructions for task = reconstruct) to this picture")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(func=evaluate_command)

    run = subparsers.add_parser(
        "run", help="run a network on one input; draw feature maps and filters",
        description="Run a network on one picture (.png, .jpg, ...: grey or RGB by the input's channels, "
                    "resized to the input size, scaled to [0, 1]) or array (.npy, used as it is). Prints the "
                    "top classes of a classifier, else the output.")
    run.add_argument("file", help="the .cnn file")
    add_network_option(run)
    run.add_argument("--weights", metavar="W.npz", help="trained weights, or a run directory (its best.npz, else "
                                                         "its weights.npz); default: initial weights")
    run.add_argument("--partial", action="store_true",
                     help="load the weights whose names and shapes match, keep the others at their initial values")
    run.add_argument("--input", required=True, metavar="IMAGE", help="a picture or a .npy array")
    run.add_argument("--feature-maps", metavar="PNG", help="draw the chosen layers' outputs")
    run.add_argument("--layers", nargs="+", metavar="GLOB",
                     help="layers for --feature-maps (default: the input and every picture-shaped layer)")
    run.add_argument("--filters", metavar="PNG", help="draw the first conv layer's kernels")
    run.add_argument("--top", type=int, default=5, help="how many classes to list (default 5)")
    run.add_argument("--picture", metavar="PNG", help="task = reconstruct: the input beside its reconstruction; "
                                                      "task = segment: the picture, its predicted mask and both overlaid")
    run.add_argument("--rf", metavar="LAYER:ROW,COL", help="draw the input region that unit sees (the analysed "
                     "receptive field) beside its effective field |d unit / d input|")
    run.add_argument("--rf-out", metavar="PNG", default="receptive-field.png",
                     help="the --rf picture (default receptive-field.png)")
    run.set_defaults(func=run_command)


def add_fit_flags(parser) -> None:
    """The flags of the train keys cnnspec adds where dsl.md is silent (cnnspec.lang.fitting): each
    value is read as the file's setting would be."""
    group = parser.add_argument_group("schedules, best weights, early stopping (train-section keys too)")
    group.add_argument("--weight-decay", type=float, metavar="WD",
                       help="the optimizer's weight_decay (adamw: decoupled)")
    group.add_argument("--schedule", metavar="SCHED",
                       help="'step(STEP_SIZE, gamma=0.1)', 'multistep([M1, M2], gamma=0.1)', "
                            "'cosine(T_max, eta_min=0)', 'onecycle(max_lr, pct_start=0.3, ...)' or none; "
                            "interval=epoch|step")
    group.add_argument("--warmup", metavar="N",
                       help="N epochs (steps) of linear warm-up, or 'linear(N, start_factor=F)'")
    group.add_argument("--monitor", metavar="Q", help="val_loss (default), val_acc, train_loss, train_acc: "
                                                      "what best.npz and early stopping follow")
    group.add_argument("--patience", type=int, metavar="N", help="stop after N epochs without improvement")
    group.add_argument("--min-delta", type=float, metavar="X", help="the least change that counts as an improvement")
    group.add_argument("--restore-best-weights", action=argparse.BooleanOptionalAction, default=None,
                       help="end with the best epoch's weights in weights.npz")
    group.add_argument("--clip-grad-norm", type=float, metavar="MAX", help="clip gradients to this global L2 norm")
    group.add_argument("--top-k", type=int, metavar="K", help="also report top-K accuracy")


FIT_FLAGS = ("weight_decay", "schedule", "warmup", "monitor", "patience", "min_delta", "restore_best_weights",
             "clip_grad_norm", "top_k")


def default_run_dir(network: str) -> Path:
    """``runs/<network>-<timestamp>`` (with a suffix when that already exists)."""
    base = Path("runs") / f"{network}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 2
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def train_command(args) -> int:
    import cnnspec
    from cnnspec.train.config import resolve_config
    from cnnspec.train.loop import fit

    network = cnnspec.load(args.file, network=args.network)
    settings = dict(data=args.data, epochs=args.epochs, batch=args.batch, lr=args.lr,
                    optimizer=args.optimizer, momentum=args.momentum, loss=args.loss, seed=args.seed,
                    val_split=args.val_split, augment=args.augment, init=args.init, freeze=args.freeze,
                    unfreeze_after=args.unfreeze_after)
    settings.update({key: getattr(args, key) for key in FIT_FLAGS})
    started = time.perf_counter()
    if args.resume:
        history = fit(network, resume=args.resume, out=args.out, progress=not args.no_progress, **settings)
    else:
        config = resolve_config(network, **settings)
        out = Path(args.out) if args.out else default_run_dir(network.name)
        history = fit(network, config, out=out, progress=not args.no_progress)
    if history.interrupted:
        return 130
    last = history.last
    if last:
        summary = f"done in {time.perf_counter() - started:.1f} s"
        if history.compile_seconds is not None:
            summary += f" ({history.compile_seconds:.1f} s of it compiling kernels, first run only)"
        for key, words, show in (("val_miou", "validation mean IoU", lambda v: f"{100 * v:.2f}%"),
                                 ("val_acc", "validation accuracy", lambda v: f"{100 * v:.2f}%"),
                                 ("val_psnr", "validation PSNR", lambda v: f"{v:.2f} dB")):
            if last.get(key) is not None:
                best = max(r[key] for r in history.rows if r.get(key) is not None)
                summary += f": {words} {show(last[key])} (best {show(best)})"
                break
        print(summary)
    if history.written:            # best.npz is named in the note after weights.npz
        shown = [str(path) + (_best_note(history) if path.name == "weights.npz" else "")
                 for path in history.written if path.name != "best.npz"]
        print(f"wrote {', '.join(shown)}")
    return 0


def _best_note(history) -> str:
    """`` (epoch 10), runs/x/best.npz (epoch 6: val_loss 0.0412)`` when the run kept a best epoch."""
    from cnnspec.train.callbacks import format_quantity

    kept = history.best or {}
    if kept.get("epoch") is None or not history.rows:
        return ""
    final = kept["epoch"] if history.config.restore_best_weights else history.last["epoch"]
    return (f" (epoch {final}), {history.out / 'best.npz'} (epoch {kept['epoch']}: {kept['monitor']} "
            f"{format_quantity(kept['monitor'], kept['value'])})")


def weights_file(path) -> str:
    """``--weights``: a file as given; a run directory gives its ``best.npz`` when it has one (the
    best epoch: what Keras' ModelCheckpoint(save_best_only=True) keeps), else its ``weights.npz``."""
    folder = Path(path)
    if not folder.is_dir():
        return str(path)
    for name in ("best.npz", "weights.npz"):
        if (folder / name).is_file():
            print(f"using {folder / name}", file=sys.stderr)
            return str(folder / name)
    raise CnnSpecError("no best.npz or weights.npz in this folder", file=str(path))


def load_weights(model, path, partial: bool) -> None:
    """``--weights`` (and ``--partial``): strict, with the command line's own way out in the hint; or
    what matches, saying per layer what was loaded, skipped and left at its initial value."""
    if not partial:
        try:
            model.load(path)
        except CnnSpecError as err:
            if not err.message.startswith("weights do not match"):
                raise
            raise CnnSpecError(err.message, file=err.file,
                               hint="--partial loads the weights whose names and shapes match and keeps "
                                    "the others at their initial values") from None
        return
    from cnnspec.errors import plural

    report = model.load(path, strict=False)
    layer = lambda key: key.rsplit(".", 1)[0]                                # noqa: E731
    skipped = list(dict.fromkeys(layer(k) for k, _ in report.skipped))
    new = [n for n in dict.fromkeys(layer(k) for k in report.new) if n not in skipped]
    loaded = [n for n in dict.fromkeys(layer(k) for k in report.loaded) if n not in skipped + new]
    parts = [f"loaded {plural(len(loaded), 'layer')}" + (f" ({', '.join(loaded)})" if loaded else "")]
    parts += [f"skipped {'; '.join(f'{k}: {why}' for k, why in report.skipped)}"] if report.skipped else []
    parts += [f"kept the initial values of {', '.join(new)}"] if new else []
    print(f"--partial {path}: " + "; ".join(parts), file=sys.stderr)


def spread(names: list, count: int) -> list:
    """``count`` of ``names`` evenly spaced from the first to the last (both kept), in order."""
    if len(names) <= count:
        return list(names)
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def aspect_note(path: Path, input_shape) -> str | None:
    """A note when a picture is resized to the input with another aspect ratio (it is stretched)."""
    if path.suffix.lower() == ".npy" or len(input_shape) != 3:
        return None
    try:
        from PIL import Image

        with Image.open(path) as picture:
            width, height = picture.size
    except Exception:                     # read_array has said what is wrong with the file
        return None
    want_h, want_w = input_shape[1], input_shape[2]
    if abs(width * want_h - height * want_w) <= 0.02 * height * want_w:
        return None
    return (f"note: {path.name} is {width}x{height} (width x height); it was resized to {want_w}x{want_h}, "
            f"the network's input, which changes its aspect ratio (crop it to {want_w}:{want_h} to keep shapes)")


def _run_settings(weights) -> dict:
    """data, seed and val_split of the run that wrote ``weights`` (its log.json), if there is one."""
    from cnnspec.train.inference import run_log

    return run_log(weights).get("config", {})


def evaluate_command(args) -> int:
    import cnnspec
    from cnnspec.data import load_dataset
    from cnnspec.train.config import located, resolve_config
    from cnnspec.train.metrics import evaluate

    network = cnnspec.load(args.file, network=args.network)
    args.weights = weights_file(args.weights)
    config = resolve_config(network, seed=args.seed, val_split=args.val_split, data=args.data, top_k=args.top_k)
    if config.task == "gan":
        raise CnnSpecError("a GAN's losses do not measure its samples: `cnnspec evaluate` has nothing to report "
                           "for task = gan", hint=f"draw samples with cnnspec generate {args.file} --weights "
                                                  f"{args.weights} -o grid.png")
    previous = _run_settings(args.weights)
    if previous and args.data is None and previous.get("data"):
        config.data, config.data_base = previous["data"], previous.get("data_base")
    for key in ("seed", "val_split", "loss", "top_k"):
        if previous.get(key) is not None and getattr(args, key, None) is None:
            setattr(config, key, previous[key])
    model = network.compile(dtype="float32", seed=config.seed)
    load_weights(model, args.weights, args.partial)
    from cnnspec.train.progress import CompileNotice

    with CompileNotice():
        model.warm_up(loss=config.loss, training=False)
    with located(network, "data", config.from_file if not previous else []):
        dataset = load_dataset(config.data, network.input_shape, seed=config.seed, val_split=config.val_split,
                               base_dir=config.data_base, output_shape=network.output_shape, task=config.task)
    split = args.split or ("test" if dataset.x_test is not None else "val")
    x, y = dataset.split(split)
    corrupted = None
    if config.task == "reconstruct":
        from cnnspec.train.metrics import corrupted_held_out, evaluate_reconstruction

        corrupted = corrupted_held_out(config.corrupt, x, config.seed) if config.corrupt else None
        result = evaluate_reconstruction(model, x, loss=config.loss, split=split, corrupted=corrupted)
    else:
        with located(network, "top_k", config.from_file if not previous else []):
            result = evaluate(model, x, y, dataset.classes, loss=config.loss, split=split, top_k=config.top_k,
                              task=config.task)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"{network.name} with {args.weights} on {dataset.spec}")
        print(result.report())
    if args.plot:
        where = f"{network.name} on {dataset.spec} ({split})"
        if config.task == "reconstruct":             # eight inputs, corrupted, reconstructed
            from cnnspec.render.tasks import plot_reconstructions

            fed = x if corrupted is None else corrupted
            plot_reconstructions(x[:8], None if corrupted is None else corrupted[:8], model.forward(fed[:8]),
                                 args.plot, title=f"{where}: PSNR {result.psnr:.2f} dB")
        else:
            from cnnspec.render.pictures import plot_confusion

            title = (f"{where}: mean IoU {100 * result.mean_iou:.1f}%, pixels" if config.task == "segment"
                     else f"{where}: {100 * result.accuracy:.1f}%")
            plot_confusion(result.confusion, result.classes, args.plot, title=title)
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _task_picture(path, network, x, result) -> None:
    """``run --picture``: what a reconstruction or segmentation network made of the input."""
    from cnnspec.render.tasks import plot_reconstructions, plot_segmentations

    if result.mask is not None:
        plot_segmentations(x[None], None, result.mask[None], path, classes=result.classes,
                           title=f"{network.name}: predicted mask")
    elif result.psnr is not None:
        plot_reconstructions(x[None], None, result.output[None], path,
                             title=f"{network.name}: PSNR {result.psnr:.2f} dB")
    else:
        raise CnnSpecError("--picture draws the output of task = reconstruct or segment; this network's train "
                           "section has neither")
    print(f"wrote {path}")


def run_command(args) -> int:
    import cnnspec
    from cnnspec.data import read_array
    from cnnspec.train.inference import class_names, kernel_names, picture_layers, predict

    network = cnnspec.load(args.file, network=args.network)
    model = network.compile(dtype="float32", seed=int(network.train_config.get("seed", 0)))
    if args.weights:
        args.weights = weights_file(args.weights)
        load_weights(model, args.weights, args.partial)
    else:
        learned = [name for name, flag in model.trainable.items()
                   if flag and network.graph.nodes[name]["config"].get("weights") is None]
        if learned:
            print(f"note: no --weights: {', '.join(learned)} keep their random initial values",
                  file=sys.stderr)
    if args.top < 1:
        raise CnnSpecError(f"--top must be at least 1, got {args.top}")
    # every picture's name and the --rf unit are checked before anything is computed or written,
    # so that a mistake in one leaves no other picture written
    from cnnspec.render.pictures import check_picture_path

    for path in (args.picture, args.feature_maps, args.filters, args.rf_out if args.rf else None):
        if path:
            check_picture_path(path)
    if args.rf:
        from cnnspec.explain.fields import check_unit, parse_unit

        check_unit(model, *parse_unit(args.rf))
    x = read_array(Path(args.input), network.input_shape)
    resized = aspect_note(Path(args.input), network.input_shape)
    if resized:
        print(resized, file=sys.stderr)
    from cnnspec.train.progress import CompileNotice

    with CompileNotice():
        model.warm_up(loss=None, training=False, batch=1)
    layers = args.layers
    if args.feature_maps and not layers:
        layers = picture_layers(model)
        if len(layers) > MAX_DEFAULT_LAYERS:
            chosen = spread(layers, MAX_DEFAULT_LAYERS)
            print(f"note: drawing {MAX_DEFAULT_LAYERS} of the {len(layers)} picture-shaped layers, spread over "
                  f"the network: {', '.join(chosen)}; choose others with --layers", file=sys.stderr)
            layers = chosen
    result = predict(model, x, classes=class_names(network, args.weights), layers=layers, top=args.top)
    print(result.report())
    if args.picture:
        _task_picture(args.picture, network, x, result)
    if args.feature_maps:
        from cnnspec.render.pictures import plot_feature_maps

        maps = {name: value for name, value in result.maps.items() if value.ndim >= 2}
        if not maps:
            raise CnnSpecError(f"none of the chosen layers ({', '.join(result.maps)}) has a picture- or "
                               f"sequence-shaped output to draw")
        plot_feature_maps(maps, args.feature_maps, title=f"{network.name} on {Path(args.input).name}",
                          labels={name: kernel_names(network, name) for name in maps})
        print(f"wrote {args.feature_maps} ({', '.join(maps)})")
    if args.filters:
        from cnnspec.render.pictures import plot_filters

        conv = next((name for name in model.layers if network.graph.nodes[name]["op"] == "conv"), None)
        if conv is None:
            raise CnnSpecError(f"network {network.name} has no conv layer whose filters --filters could draw")
        plot_filters(model.params[conv]["weight"], args.filters, conv)
        print(f"wrote {args.filters} ({conv})")
    if args.rf:
        from cnnspec.explain.cli import field_picture

        field_picture(network, model, x, args.rf, args.rf_out)
    return 0

