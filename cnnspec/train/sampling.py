"""Drawing samples from a trained generative network: a GAN's generator, or a VAE's decoder (the
layers after its ``sample`` layer fed with z ~ N(0, I)) — ``cnnspec generate``.

    pictures = generate(cnnspec.load("specs/vae.cnn"), "runs/vae/best.npz", n=64, seed=0)
    pictures = generate(cnnspec.load("specs/cgan.cnn"), "runs/cgan/weights.npz", label=3)
    walk = generate(net, weights, n=10, interpolate=True)      # from one code to another

Samples are (N, C, H, W) in the data's [0, 1] scale: a generator ending in tanh has its [-1, 1]
mapped back by (x + 1) / 2.
"""
from __future__ import annotations

import math

import numpy as np

from cnnspec.errors import CnnSpecError

LABEL = "label"


def generator_of(network, networks: dict | None = None):
    """(the network that generates, the layer codes are fed to or None for a generator's input,
    the task): a GAN file's generator, or a network with a ``sample`` layer (a VAE)."""
    section = network.train_config
    if section.get("task") == "gan":
        if networks is None:
            import cnnspec

            networks = cnnspec.load_all(network.file) if network.file else {network.name: network}
        name = section.get("generator")
        if name not in networks:
            raise CnnSpecError(f"the train section names the generator `{name}`, which is not in this file",
                               file=network.file)
        return networks[name], None
    samples = [name for name, node in network.graph.nodes(data=True) if node.get("op") == "sample"]
    if samples:
        return network, samples[-1]
    raise CnnSpecError(f"`{network.name}` generates nothing: `cnnspec generate` draws from a GAN's generator "
                       f"(a file whose train section says task = gan) or a VAE's decoder (a network with a "
                       f"`sample` layer)", file=network.file)


def generate(network, weights=None, *, n: int = 64, seed: int = 0, label: int | None = None,
             interpolate: bool = False, networks: dict | None = None, model=None) -> np.ndarray:
    """``n`` samples (N, C, H, W) in [0, 1] from ``network``'s generator with ``weights`` (a
    weights file, or ``model`` already made and loaded). A conditional generator draws ``label``
    for every sample, else the labels 0, 1, ..., K-1 in turn. ``interpolate`` walks in ``n``
    even steps along the straight line between two random codes (the latent walk)."""
    generator, layer = generator_of(network, networks)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 100_000:
        raise CnnSpecError(f"-n must be a whole number of samples from 1 to 100000, got {n!r}")
    if model is None:
        model = generator.compile(dtype="float32", seed=0)
        if weights is not None:
            model.load(weights)
    rng = np.random.default_rng(seed)
    if layer is not None:
        if label is not None:
            raise CnnSpecError(f"--label: `{generator.name}` is a VAE, not a conditional generator: it takes no label")
        shape = tuple(generator.graph.nodes[layer]["output_shape"])
        out = model.decode(layer, _codes(rng, n, shape, interpolate))
        return np.clip(out, 0.0, 1.0) if _final(model) == "sigmoid" else out
    noise = [name for name in model.input_names if name != LABEL]
    if len(noise) != 1:
        raise CnnSpecError(f"the generator `{model.name}` must have one noise input; it has {', '.join(model.input_names)}")
    inputs = {noise[0]: _codes(rng, n, model.input_shapes[noise[0]], interpolate)}
    if LABEL in model.input_names:
        k = model.input_shapes[LABEL][0]
        if label is not None and not 0 <= label < k:
            raise CnnSpecError(f"--label {label}: the generator's labels are 0..{k - 1}")
        labels = np.full(n, label) if label is not None else np.arange(n) % k
        inputs[LABEL] = np.eye(k, dtype=np.float32)[labels]
    elif label is not None:
        raise CnnSpecError(f"--label: the generator `{model.name}` is not conditional (it has no `input label`)")
    out = model.forward(inputs)
    return (out + 1) / 2 if _final(model) == "tanh" else out


def _final(model) -> str:
    return model._plan(1).final_op


def _codes(rng, n: int, shape, interpolate: bool) -> np.ndarray:
    if not interpolate:
        return rng.standard_normal((n, *shape)).astype(np.float32)
    ends = rng.standard_normal((2, math.prod(shape)))
    steps = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - steps) * ends[0] + steps * ends[1]).reshape(n, *shape).astype(np.float32)


def generate_command(args) -> int:
    import sys

    import cnnspec
    from cnnspec import atomic
    from cnnspec.train.cli import weights_file

    network = cnnspec.load(args.file, network=args.network)
    if not args.out and not args.npz:
        raise CnnSpecError("say where the samples go: -o grid.png, --npz samples.npz, or both")
    weights = weights_file(args.weights)
    generator, _ = generator_of(network)
    model = generator.compile(dtype="float32", seed=0)
    from cnnspec.train.cli import load_weights

    load_weights(model, weights, False)
    pictures = generate(network, n=args.n, seed=args.seed, label=args.label, interpolate=args.interpolate,
                        model=model)
    what = f"{len(pictures)} {'steps of a latent walk' if args.interpolate else 'samples'} from {generator.name}"
    if args.out:
        from cnnspec.render.tasks import save_grid

        if pictures.ndim != 4:
            raise CnnSpecError(f"the generator's output is {'x'.join(map(str, pictures.shape[1:]))}: -o draws "
                               f"pictures (CxHxW); use --npz")
        atomic.write_atomic(args.out, lambda tmp: save_grid(pictures, tmp, columns=len(pictures)
                                                            if args.interpolate else None), what="sample grid")
        print(f"wrote {args.out} ({what})")
    if args.npz:
        atomic.write_npz(args.npz, {"x": pictures.astype(np.float32)}, what="samples")
        print(f"wrote {args.npz} (x: {'x'.join(map(str, pictures.shape))}, in [0, 1])",
              file=sys.stdout)
    return 0


def register(subparsers) -> None:
    from cnnspec.commands import add_network_option

    parser = subparsers.add_parser(
        "generate", help="draw samples from a trained GAN generator or VAE decoder",
        description="Draw samples from a trained generative network: the generator of a file whose train "
                    "section says task = gan, or the decoder of a VAE (the layers after its `sample` layer, "
                    "fed with z ~ N(0, I)). Samples are in the data's [0, 1] scale.")
    parser.add_argument("file", help="the .cnn file")
    add_network_option(parser)
    parser.add_argument("--weights", required=True, metavar="W.npz",
                        help="the generator's (or VAE's) weights, or a run directory")
    parser.add_argument("-n", type=int, default=64, help="how many samples (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--label", type=int, metavar="K", help="conditional GAN: draw class K (default: every "
                                                               "class in turn)")
    parser.add_argument("--interpolate", action="store_true",
                        help="walk in -n even steps between two random codes instead of drawing -n codes")
    parser.add_argument("-o", "--out", metavar="PNG", help="a grid of the samples")
    parser.add_argument("--npz", metavar="NPZ", help="the samples as array x (N x C x H x W, in [0, 1])")
    parser.set_defaults(func=generate_command)
