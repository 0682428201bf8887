"""The variational auto-encoder's sampling layer (Kingma & Welling's reparameterisation)."""
from __future__ import annotations

from cnnspec.layers.base import Layer, LayerError, as_float, fmt_shape


class Sample(Layer):
    """``z = sample(mu, logvar)``: ``mu + exp(logvar/2)*eps`` with ``eps ~ N(0, 1)`` in training,
    ``mu`` at evaluation. Two inputs, in order mu and logvar, of equal shapes.

    It adds ``beta * KL(N(mu, sigma^2) || N(0, 1))`` (summed over features, averaged over the
    batch) to the training loss: :meth:`loss_term` says so to the engine and the summary.
    Config key: ``beta``."""
    op = "sample"
    params = {"beta": 1.0}
    n_inputs = 2
    takes_names = True

    def check_inputs(self, in_shapes):
        super().check_inputs(in_shapes)
        mu, logvar = in_shapes
        if tuple(mu) != tuple(logvar):
            raise LayerError(f"`sample` needs mu and logvar of the same shape, got {fmt_shape(mu)} and "
                             f"{fmt_shape(logvar)}", hint="end the encoder in two heads of one size: "
                                                          "mu = h -> dense(32), logvar = h -> dense(32)")

    def resolve(self, v, at, in_shapes):
        return {"beta": as_float(v["beta"], "beta", at["beta"], 0.0)}

    def loss_term(self, cfg) -> dict:
        return {"term": "kl", "weight": cfg["beta"]}

    def describe(self, cfg):
        return "" if cfg["beta"] == 1.0 else f"beta={cfg['beta']:g}"
