"""Measure the goals of the generative and dense-prediction specs (the README's "Training beyond
classification" table). Not a test: it trains networks for minutes each. Run from the repository:

    python specs/measure_goals.py --out runs/goals                 # every goal
    python specs/measure_goals.py --out runs/goals --only unet dcgan
    python specs/measure_goals.py --out runs/goals --only dcgan cgan --seeds 0 1 2

Each spec trains from its own train section (seed 0) into OUT/<name>; the GANs also with the other
``--seeds`` (into OUT/<name>-seed<S>), reported one by one and as median, min and max, with the
load averages before and after each run. A finished run found there is reused. Goals:

* denoise, autoencoder: PSNR of the outputs on the held-out split minus the PSNR of the noisy
  inputs (goal: >= 6 dB);
* unet: mean IoU of unet.cnn on 1,000 freshly drawn shapes (another seed: pictures the
  run never saw), classes absent from both prediction and truth left out (goal: >= 0.85);
* dcgan: dcgan.cnn trained in under 10 minutes; a LeNet-5 (specs/lenet5.cnn, trained on
  shapes) classifies 1,000 samples: the share classified with confidence >= 0.9 (goal: >= 70%)
  and the largest share of one class among those (goal: <= 30%, no mode collapse);
* cgan: 100 samples per label k from cgan.cnn: the share classified k (goal: >= 70%);
  cgan_mlp the same for cgan_mlp.cnn (1x28x28, padded by 2 pixels of their border to LeNet-5's
  1x32x32);
* vae: a latent walk of vae.cnn (specs/pictures/vae-walk.png) and random samples.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DCGAN = "dcgan.cnn"                        # the unconditional DCGAN of the goal
CGAN = "cgan.cnn"                          # the conditional GAN of the goal (cgan_mlp: cgan_mlp.cnn)
sys.path.insert(0, str(HERE.parent))

import cnnspec                                               # noqa: E402
from cnnspec.train import fit                                # noqa: E402
from cnnspec.train.sampling import generate                  # noqa: E402


def trained(spec: str, out: Path, networks=None, seed: int | None = None, **overrides):
    """(the trained model, History or None, seconds) of ``spec`` in ``out/<stem>`` (seed None: the
    train section's own; another seed in ``out/<stem>-seed<S>``); reused when done."""
    path = HERE / spec
    network = cnnspec.load(path)
    run = out / (path.stem if seed is None else f"{path.stem}-seed{seed}")
    state = run / "checkpoint" / "state.json"
    if state.is_file() and json.loads(state.read_text()).get("finished") and not overrides:
        model_network = network
        if network.train_config.get("task") == "gan":
            model_network = cnnspec.load_all(path)[network.train_config["generator"]]
        model = model_network.compile(dtype="float32")
        model.load(run / ("best.npz" if (run / "best.npz").is_file() else "weights.npz"))
        log = json.loads((run / "log.json").read_text())
        return model, None, sum(row["seconds"] for row in log["epochs"])
    if seed is not None:
        overrides["seed"] = seed
    started = time.perf_counter()
    history = fit(network, out=run, progress=False, **overrides)
    seconds = time.perf_counter() - started
    model = history.model
    if history.best_weights is not None:
        model.load(run / "best.npz")
    return model, history, seconds


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes), as `uptime` prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def over_seeds(measure, seeds, keys):
    """Run ``measure(seed)`` for each seed; the per-seed results and the median, min and max of ``keys``."""
    runs = []
    for seed in seeds:
        before = load()
        result = measure(seed)
        result.update(seed=seed, load_before=before, load_after=load())
        runs.append(result)
        print(json.dumps(result), flush=True)
    summary = {key: {"median": float(np.median([r[key] for r in runs])), "min": float(min(r[key] for r in runs)),
                     "max": float(max(r[key] for r in runs))} for key in keys}
    return {"spec": runs[0]["spec"], "goal": runs[0]["goal"], "seeds": list(seeds), "summary": summary,
            "met_runs": f"{sum(r['met'] for r in runs)}/{len(runs)}", "runs": runs}


def held_out_reconstruction(spec, out):
    from cnnspec.data import Augmenter, load_dataset
    from cnnspec.train.metrics import evaluate_reconstruction
    from cnnspec.train.config import resolve_config

    model, _, seconds = trained(spec, out)
    network = cnnspec.load(HERE / spec)
    config = resolve_config(network)
    data = load_dataset("shapes:n=1000", network.input_shape, seed=123, val_split=0.0, task="reconstruct")
    x = data.x_train
    noisy = Augmenter(config.corrupt, x.shape[1:])(x, np.random.default_rng(123))
    result = evaluate_reconstruction(model, x, loss=config.loss, corrupted=noisy, split="1,000 new shapes")
    return {"spec": spec, "psnr": result.psnr, "input_psnr": result.input_psnr,
            "gain_db": result.psnr - result.input_psnr, "train_seconds": seconds, "goal": ">= 6 dB gain",
            "met": result.psnr - result.input_psnr >= 6}


def unet(out):
    from cnnspec.data.shapes import make_shapes
    from cnnspec.train.metrics import evaluate_segmentation

    model, _, seconds = trained("unet.cnn", out)
    x, _, masks = make_shapes(1000, (1, 32, 32), seed=123, masks=True)
    result = evaluate_segmentation(model, x, masks, ["background"], split="1,000 new shapes")
    return {"spec": "unet.cnn", "mean_iou": result.mean_iou, "pixel_accuracy": result.pixel_accuracy,
            "iou": result.iou, "train_seconds": seconds, "goal": "mean IoU >= 0.85", "met": result.mean_iou >= 0.85}


def judge(out):
    """LeNet-5 trained on shapes: the classifier of generated samples."""
    model, _, _ = trained("lenet5.cnn", out)
    return model


def classify(judge_model, pictures):
    if pictures.shape[-1] == 28:
        pictures = np.pad(pictures, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    probabilities = judge_model.forward(pictures.astype(np.float32))
    return probabilities.argmax(axis=1), probabilities.max(axis=1)


def dcgan(out, judge_model, seed=None, picture=True):
    model, _, seconds = trained(DCGAN, out, seed=seed)
    network = cnnspec.load(HERE / DCGAN)
    pictures = generate(network, n=1000, seed=123, model=model)
    predicted, confidence = classify(judge_model, pictures)
    confident = confidence >= 0.9
    shares = np.bincount(predicted[confident], minlength=10) / max(confident.sum(), 1)
    if picture:
        from cnnspec.render.tasks import save_grid

        save_grid(pictures[:64], HERE / "pictures" / "dcgan-samples.png", columns=8)
    return {"spec": DCGAN, "train_seconds": seconds, "confident_share": float(confident.mean()),
            "largest_class_share": float(shares.max()), "class_shares": shares.round(3).tolist(),
            "goal": ">= 70% confident, no class > 30%, trained in < 600 s",
            "met": bool(confident.mean() >= 0.7 and shares.max() <= 0.3 and seconds < 600)}


def cgan(out, judge_model, spec=CGAN, seed=None, picture=True):
    model, _, seconds = trained(spec, out, seed=seed)
    network = cnnspec.load(HERE / spec)
    right, per_label = 0, []
    rows = []
    for k in range(10):
        pictures = generate(network, n=100, seed=123 + k, label=k, model=model)
        predicted, _ = classify(judge_model, pictures)
        per_label.append(float(np.mean(predicted == k)))
        right += int(np.sum(predicted == k))
        rows.append(pictures[:8])
    if picture:
        from cnnspec.render.tasks import save_grid

        save_grid(np.concatenate(rows), HERE / "pictures" / f"{Path(spec).stem.replace('_', '-')}-by-label.png",
                  columns=8)
    return {"spec": spec, "train_seconds": seconds, "share_classified_as_label": right / 1000,
            "per_label": [round(v, 3) for v in per_label], "goal": ">= 70% classified as their label",
            "met": right / 1000 >= 0.7}


def vae(out):
    model, _, seconds = trained("vae.cnn", out)
    network = cnnspec.load(HERE / "vae.cnn")
    from cnnspec.render.tasks import save_grid

    walks = np.concatenate([generate(network, n=10, seed=s, model=model, interpolate=True) for s in range(4)])
    save_grid(walks, HERE / "pictures" / "vae-walk.png", columns=10)
    steps = np.abs(np.diff(walks.reshape(4, 10, -1), axis=1)).mean(axis=2)
    return {"spec": "vae.cnn", "train_seconds": seconds, "picture": "specs/pictures/vae-walk.png",
            "mean_step_change": float(steps.mean()), "largest_step_change": float(steps.max()),
            "end_to_end_change": float(np.abs(walks.reshape(4, 10, -1)[:, -1] - walks.reshape(4, 10, -1)[:, 0])
                                       .mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/goals", help="folder of the runs (default runs/goals)")
    parser.add_argument("--only", nargs="+", choices=("denoise", "autoencoder", "unet", "dcgan", "cgan", "cgan_mlp",
                                                      "vae"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="the GANs' seeds: one run each, then the median, min and max (default 0)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.only or ("denoise", "autoencoder", "unet", "vae", "dcgan", "cgan")
    results = {}
    judge_model = judge(out) if {"dcgan", "cgan", "cgan_mlp"} & set(chosen) else None
    # seed 0, the train sections' own, keeps the run folder <stem>; its pictures go to the README
    gan_seed = lambda s: None if s == 0 else s              # noqa: E731
    for name in chosen:
        if name in ("denoise", "autoencoder"):
            results[name] = held_out_reconstruction(f"{name}.cnn", out)
        elif name == "unet":
            results[name] = unet(out)
        elif name == "dcgan":
            results[name] = over_seeds(lambda s: dcgan(out, judge_model, gan_seed(s), s == args.seeds[0]), args.seeds,
                                       ("confident_share", "largest_class_share", "train_seconds"))
        elif name in ("cgan", "cgan_mlp"):
            spec = CGAN if name == "cgan" else "cgan_mlp.cnn"
            results[name] = over_seeds(lambda s: cgan(out, judge_model, spec, gan_seed(s), s == args.seeds[0]),
                                       args.seeds, ("share_classified_as_label", "train_seconds"))
        else:
            results[name] = vae(out)
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    previous = json.loads((out / "goals.json").read_text()) if (out / "goals.json").is_file() else {}
    (out / "goals.json").write_text(json.dumps({**previous, **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
