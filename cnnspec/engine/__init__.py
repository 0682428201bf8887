"""The execution engine: an analysed graph compiled to a plan of numba kernel calls.

    from cnnspec.engine import Model, SGD, Adam, AdamW, CosineAnnealingLR
    model = Model(network, dtype="float32", seed=0)
    opt = SGD(model, lr=0.05, momentum=0.9, clip_grad_norm=1.0)
    sched = CosineAnnealingLR(opt, T_max=10)
    loss, out = model.train_step(x, y, opt)
    sched.step()                                   # after each epoch, as in torch

Names are imported on first use, so that ``cnnspec.engine.cli`` (imported by ``cnnspec --help``)
does not load numba.
"""
_NAMES = {
    "Model": "model", "LoadReport": "model",
    "SGD": "optim", "Adam": "optim", "AdamW": "optim", "clip_grad_norm_": "optim",
    "StepLR": "schedule", "MultiStepLR": "schedule", "CosineAnnealingLR": "schedule", "LinearLR": "schedule",
    "OneCycleLR": "schedule", "SequentialLR": "schedule", "LRScheduler": "schedule",
}
__all__ = list(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"cnnspec.engine.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'cnnspec.engine' has no attribute {name!r}")
