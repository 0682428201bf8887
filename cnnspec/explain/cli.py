"""``cnnspec explain`` and ``cnnspec filters`` (and the ``--rf`` picture of ``cnnspec run``): thin
faces over :mod:`cnnspec.explain`. Nothing heavy is imported at import time."""
from __future__ import annotations

import sys
from pathlib import Path

from cnnspec.commands import add_network_option
from cnnspec.errors import CnnSpecError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="Grad-CAM, saliency, SmoothGrad or occlusion map of one input",
        description="Which parts of an input a classifier's score depends on, for the predicted class unless "
                    "--class says otherwise; drawn over the input (-o) and/or saved as an array (--npy). "
                    "The score is the class's logit (before a final softmax or sigmoid) unless --score probability.")
    p.add_argument("file", help="the .cnn file")
    add_network_option(p)
    p.add_argument("--weights", metavar="W.npz", help="trained weights (default: initial weights)")
    p.add_argument("--input", required=True, metavar="IMAGE", help="a picture or a .npy array")
    p.add_argument("--method", default="gradcam", choices=("gradcam", "saliency", "smoothgrad", "occlusion"),
                   help="gradcam (default), saliency (|input gradient|), smoothgrad (saliency averaged over "
                        "noisy copies) or occlusion (score drop when a window is hidden)")
    p.add_argument("--layer", help="Grad-CAM's layer (default: the last conv layer)")
    p.add_argument("--class", dest="target", metavar="K", help="the class to explain: index or name "
                                                                  "(default: the predicted class)")
    p.add_argument("-o", "--output", metavar="PNG", help="draw input, map and overlay to this picture")
    p.add_argument("--npy", metavar="NPY", help="save the map (input's height x width) as a .npy array")
    p.add_argument("--score", choices=("logit", "probability"), default="logit",
                   help="what is explained: the class's logit (default) or its probability (the final "
                        "softmax's or sigmoid's output)")
    p.add_argument("--upsample", choices=("bilinear", "nearest"), default="bilinear",
                   help="Grad-CAM's resampling to the input size (default bilinear)")
    p.add_argument("--samples", type=int, default=50, help="SmoothGrad: noisy copies (default 50)")
    p.add_argument("--noise", type=float, default=0.15,
                   help="SmoothGrad: noise standard deviation as a fraction of the input's range (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="SmoothGrad: noise seed (default 0)")
    p.add_argument("--window", default="4", metavar="HxW", help="occlusion: window size (default 4, i.e. 4x4)")
    p.add_argument("--stride", default="2", metavar="HxW", help="occlusion: step between windows (default 2)")
    p.add_argument("--baseline", type=float, default=0.0, help="occlusion: value of hidden pixels (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.set_defaults(func=explain_command)

    p = subparsers.add_parser(
        "filters", help="a layer's kernels, or (--ascent) the inputs that excite each of its channels",
        description="Without --ascent: draw the kernels of a conv layer. With --ascent: for each channel, "
                    "an input that maximises the channel's mean activation, found by gradient ascent "
                    "(normalised steps, jitter, optional blur, clipped to [0, 1]; seeded).")
    p.add_argument("file", help="the .cnn file")
    add_network_option(p)
    p.add_argument("--weights", metavar="W.npz", help="trained weights (default: initial weights)")
    p.add_argument("--layer", help="the layer (default: the first conv layer)")
    p.add_argument("--ascent", action="store_true", help="gradient ascent in input space")
    p.add_argument("-o", "--output", default="filters.png", metavar="PNG", help="the picture (default filters.png)")
    p.add_argument("--npy", metavar="NPY", help="--ascent: save the inputs (channels x input shape)")
    p.add_argument("--channels", type=int, nargs="+", metavar="C", help="--ascent: only these channels")
    p.add_argument("--steps", type=int, default=128, help="--ascent: steps (default 128)")
    p.add_argument("--lr", type=float, default=0.05, help="--ascent: step size, in input units (default 0.05)")
    p.add_argument("--jitter", type=int, default=1, help="--ascent: random shift in pixels per step (default 1)")
    p.add_argument("--blur", type=float, default=0.0,
                   help="--ascent: Gaussian blur sigma in pixels, every 4 steps (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="--ascent: seed (default 0)")
    p.set_defaults(func=filters_command)


def load_model(file, weights, dtype="float32", network=None):
    """(network, model) with ``weights`` loaded, or a note on stderr that the learned layers keep
    their random initial values."""
    import cnnspec

    network = cnnspec.load(file, network=network)
    model = network.compile(dtype=dtype, seed=int(network.train_config.get("seed", 0)))
    if weights:
        model.load(weights)
    else:
        learned = [name for name, flag in model.trainable.items()
                   if flag and network.graph.nodes[name]["config"].get("weights") is None]
        if learned:
            print(f"note: no --weights: {', '.join(learned)} keep their random initial values", file=sys.stderr)
    return network, model


def _sizes(text: str, what: str) -> tuple:
    try:
        values = tuple(int(v) for v in str(text).lower().split("x"))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise CnnSpecError(f"{what} takes a size such as 4 or 4x4, got {text!r}")
    return values[0] if len(values) == 1 else values


def _class(text, classes, k: int):
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    names = list(classes or [])
    if text in names:
        return names.index(text)
    from cnnspec.errors import nearest

    guess = nearest(text, names)
    raise CnnSpecError(f"--class {text!r} is neither an index 0..{k - 1} nor a class name",
                       hint=f"did you mean `{guess}`?" if guess else
                       (f"the classes are: {', '.join(names)}" if names else None))


def _atomic_npy(path, array) -> None:
    """np.save, written atomically (a half-written file never replaces a good one)."""
    import io

    import numpy as np

    from cnnspec.render.graph import _write

    buffer = io.BytesIO()
    np.save(buffer, array)
    _write(str(path), buffer.getvalue())


def explain_command(args) -> int:
    import numpy as np

    from cnnspec.data import read_array
    from cnnspec.explain import methods
    from cnnspec.train.inference import class_names

    if not args.output and not args.npy:
        raise CnnSpecError("say where the map goes: -o PNG (a picture) and/or --npy NPY (the array)")
    if args.output:
        from cnnspec.render.pictures import check_picture_path

        check_picture_path(args.output)      # before anything is computed or written (--npy)
    network, model = load_model(args.file, args.weights, args.dtype, args.network)
    x = read_array(Path(args.input), network.input_shape)
    classes = class_names(network, args.weights)
    k = network.graph.nodes[model.scores_name]["output_shape"][0]
    options = {"score": args.score}
    if args.method == "gradcam":
        options.update(layer=args.layer, upsampling=args.upsample)
    elif args.layer:
        raise CnnSpecError(f"--layer is Grad-CAM's; --method {args.method} explains with respect to the input")
    if args.method == "smoothgrad":
        options.update(samples=args.samples, noise=args.noise, seed=args.seed)
    if args.method == "occlusion":
        options.update(window=_sizes(args.window, "--window"), stride=_sizes(args.stride, "--stride"),
                       baseline=args.baseline)
    result = methods.explain(model, x, args.method, _class(args.target, classes, k), **options)
    name = lambda c: f"{c} {classes[c]}" if classes and c < len(classes) else str(c)   # noqa: E731
    print(f"{network.name} on {Path(args.input).name}: predicted class {name(result.predicted)}")
    how = "linear" if args.upsample == "bilinear" and result.map.ndim == 1 else args.upsample
    where = f" at {result.layer} ({'x'.join(map(str, result.raw.shape))}, upsampled {how})" if result.layer else ""
    peak = np.unravel_index(int(np.argmax(result.map)), result.map.shape)
    print(f"{methods_title(result.method)} of class {name(result.target)} ({args.score} {result.score:.4g}){where}: "
          f"max {result.map.max():.4g} at {','.join(map(str, peak))}")
    if args.npy:
        _atomic_npy(args.npy, result.map)
        print(f"wrote {args.npy}")
    if args.output:
        from cnnspec.explain.pictures import plot_explanation

        plot_explanation(x, result, args.output, title=f"{network.name} on {Path(args.input).name}", classes=classes)
        print(f"wrote {args.output}")
    return 0


def methods_title(method: str) -> str:
    return {"gradcam": "Grad-CAM", "saliency": "saliency", "smoothgrad": "SmoothGrad",
            "occlusion": "occlusion"}[method]


def filters_command(args) -> int:
    network, model = load_model(args.file, args.weights, network=args.network)
    layer = args.layer
    if layer is None:
        layer = next((n for n in model.live if network.graph.nodes[n]["op"] == "conv"), None)
        if layer is None:
            raise CnnSpecError(f"network {network.name} has no conv layer; choose one with --layer")
    layer = model.tensor_name(layer, "--layer")
    if not args.ascent:
        from cnnspec.render.pictures import plot_filters

        if network.graph.nodes[layer]["op"] != "conv":
            raise CnnSpecError(f"`{layer}` is a {network.graph.nodes[layer]['op']} layer: it has no kernels to draw",
                               hint="add --ascent to see what its channels respond to")
        plot_filters(model.params[layer]["weight"], args.output, layer)
        print(f"wrote {args.output} ({layer})")
        return 0
    from cnnspec.explain.patterns import ascent
    from cnnspec.explain.pictures import plot_ascent

    result = ascent(model, layer, args.channels, steps=args.steps, lr=args.lr, jitter=args.jitter,
                    blur=args.blur, seed=args.seed)
    start, end = result.objective[0], result.objective[-1]
    print(f"{layer}: {len(result.channels)} channels, {args.steps} steps; mean activation "
          f"{start.mean():.4g} -> {end.mean():.4g} (averaged over channels)")
    if args.npy:
        _atomic_npy(args.npy, result.inputs)
        print(f"wrote {args.npy}")
    plot_ascent(result, args.output, title=f"{network.name}, {layer}: inputs that maximise each channel's "
                                           f"mean activation ({args.steps} steps)")
    print(f"wrote {args.output}")
    return 0


def field_picture(network, model, x, unit: str, path) -> None:
    """``cnnspec run --rf LAYER:ROW,COL``: the analysed and the effective receptive field."""
    from cnnspec.explain.fields import parse_unit, receptive_field
    from cnnspec.explain.pictures import plot_field

    layer, position = parse_unit(unit)
    view = receptive_field(model, x, layer, position)
    plot_field(x, view, path)
    box = " x ".join(f"{a}..{b}" for a, b in view.box)
    print(f"{view.layer} at {','.join(map(str, position))} sees input {box} "
          f"(analysed field {'x'.join(str(b - a + 1) for a, b in view.unclipped)}, clipped to the input)")
    print(f"wrote {path}")
