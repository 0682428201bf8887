"""Training, evaluation and inference on top of the engine — the Python API behind
``cnnspec train``, ``cnnspec evaluate`` and ``cnnspec run``.

    net = cnnspec.load("specs/lenet5.cnn")
    history = fit(net, epochs=3, out="runs/lenet5")          # the file's train section, overridden
    history.rows[-1]["val_acc"]
    history = fit(net, optimizer="adamw", schedule="cosine", warmup=1, patience=3, top_k=3,
                  clip_grad_norm=1.0, monitor="val_acc", restore_best_weights=True)
    history.best, history.best_weights                       # the best epoch (best.npz)
    result = evaluate(history.model, *history.dataset.split("val"), history.dataset.classes)
    print(result.report())
    predict(history.model, history.dataset.x_val[0], classes=history.classes).top

Tasks beyond classification (dsl.md §10.4) go through the same functions: ``fit`` of a file whose
train section says ``task = reconstruct``, ``segment`` or ``gan``; ``evaluate(model, x, masks,
classes, task="segment")`` (mean IoU) or ``evaluate(model, corrupted, clean, task="reconstruct",
loss="bce")`` (PSNR); ``predict`` gives a mask or a reconstruction's PSNR; ``generate(network,
weights, n=64)`` draws from a GAN's generator or a VAE's decoder.

Names are imported on first use, so that ``cnnspec.train.cli`` (imported by every ``cnnspec``
command) loads nothing heavy.
"""
_NAMES = {
    "fit": "loop", "History": "loop",
    "TrainConfig": "config", "resolve_config": "config",
    "evaluate": "metrics", "Evaluation": "metrics",
    "predict": "inference", "Prediction": "inference", "activations": "inference",
    "SegmentationEvaluation": "metrics", "ReconstructionEvaluation": "metrics", "generate": "sampling",
}
__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"cnnspec.train.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'cnnspec.train' has no attribute {name!r}")
