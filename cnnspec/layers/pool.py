"""Pooling: max, average (padded zeros counted, as PyTorch) and sum over windows; global pooling."""
from __future__ import annotations

from cnnspec.layers.base import REQUIRED, Layer, LayerError, as_bool, fmt_shape, padding, spatial, spatial_rank
from cnnspec.layers.conv import _pad_text, sliding_output, window_terms


class Pool(Layer):
    params = {"kernel": REQUIRED, "stride": None, "pad": 0, "ceil": False}
    n_positional = 1
    min_rank = 1
    example = "maxpool(2x2)"

    def resolve(self, v, at, in_shapes):
        shape = in_shapes[0]
        rank = spatial_rank(shape)
        kernel = spatial(v["kernel"], rank, "kernel", at["kernel"])
        stride = kernel if v["stride"] is None else spatial(v["stride"], rank, "stride", at["stride"])
        pad = padding(v["pad"], rank, kernel, stride, (1,) * rank, shape[1:], at["pad"])
        for i, k in enumerate(kernel):
            if max(pad[2 * i], pad[2 * i + 1]) >= k:
                # a window made only of padding would have no input to pool
                raise LayerError(f"`{self.op}` padding {_pad_text(pad)} must be smaller than the kernel "
                                 f"{fmt_shape(kernel)} on every side", arg=at["pad"])
        return {"kernel": kernel, "stride": stride, "pad": pad, "ceil": as_bool(v["ceil"], "ceil", at["ceil"])}

    def output_shape(self, cfg, in_shapes):
        return (in_shapes[0][0], *sliding_output(self.op, cfg, in_shapes[0], ceil=cfg["ceil"]))

    def window(self, cfg, in_shapes):
        return window_terms(cfg)

    def describe(self, cfg):
        text = fmt_shape(cfg["kernel"])
        if cfg["stride"] != cfg["kernel"]:
            text += f", stride {fmt_shape(cfg['stride'])}"
        if any(cfg["pad"]):
            text += f", pad {_pad_text(cfg['pad'])}"
        return text + (", ceil" if cfg["ceil"] else "")


class MaxPool(Pool):
    op = "maxpool"


class AvgPool(Pool):
    op = "avgpool"


class SumPool(Pool):
    op = "sumpool"


class GlobalPool(Layer):
    """Pools each channel over all its positions: C x H x W -> C x 1 x 1 (C x L -> C x 1)."""
    min_rank = 1

    def output_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        return (shape[0],) + (1,) * spatial_rank(shape)

    def window(self, cfg, in_shapes):
        return [(n - 1, n, 0) for n in in_shapes[0][1:]]


class GlobalAvgPool(GlobalPool):
    op = "globalavgpool"


class GlobalMaxPool(GlobalPool):
    op = "globalmaxpool"


class AdaptivePool(Layer):
    """Pools to a fixed output size with PyTorch's windows: output i of an axis of size n pools
    the inputs ``[floor(i*n/m), ceil((i+1)*n/m))``, m the output size (windows of uneven length
    when m does not divide n; overlapping ones when m > n).

    Config key: ``size``, the output's spatial sizes (per axis)."""
    params = {"size": REQUIRED}
    n_positional = 1
    min_rank = 1
    example = "adaptiveavgpool(7x7)"

    def resolve(self, v, at, in_shapes):
        return {"size": spatial(v["size"], spatial_rank(in_shapes[0]), "size", at["size"])}

    def output_shape(self, cfg, in_shapes):
        return (in_shapes[0][0], *cfg["size"])

    def window(self, cfg, in_shapes):
        from fractions import Fraction

        terms = []
        for n, m in zip(in_shapes[0][1:], cfg["size"]):
            if n % m == 0:                             # even windows: a plain pooling window
                terms.append((n // m - 1, n // m, 0))
            else:                                      # [o*n/m - (m-1)/m, (o+1)*n/m - 1 + (m-1)/m]
                slack = Fraction(m - 1, m)
                terms.append((Fraction(n, m) - 1 + 2 * slack, Fraction(n, m), slack))
        return terms

    def describe(self, cfg):
        return fmt_shape(cfg["size"])


class AdaptiveAvgPool(AdaptivePool):
    op = "adaptiveavgpool"


class AdaptiveMaxPool(AdaptivePool):
    op = "adaptivemaxpool"
