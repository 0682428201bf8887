"""The execution engine: an analysed graph compiled to a plan of numba kernel calls.

    from cnnspec.engine import Model, SGD, Adam
    model = Model(network, dtype="float32", seed=0)
    opt = SGD(model, lr=0.05, momentum=0.9)
    loss, out = model.train_step(x, y, opt)

Names are imported on first use, so that ``cnnspec.engine.cli`` (imported by ``cnnspec --help``)
does not load numba.
"""
__all__ = ["Model", "SGD", "Adam", "LoadReport"]


def __getattr__(name):
    if name in ("Model", "LoadReport"):
        from cnnspec.engine import model

        return getattr(model, name)
    if name in ("SGD", "Adam"):
        from cnnspec.engine import optim

        return getattr(optim, name)
    raise AttributeError(f"module 'cnnspec.engine' has no attribute {name!r}")
