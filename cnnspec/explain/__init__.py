"""What a network learned: class-activation and saliency maps, occlusion, the patterns that
channels respond to, and receptive fields measured by gradients.

    from cnnspec.explain import gradcam, saliency, smoothgrad, occlusion, ascent, receptive_field
    e = gradcam(model, x)                       # x: one input; e.map is H x W, e.target the class
    a = ascent(model, "conv2", steps=128)       # a.inputs[i] maximises channel a.channels[i]
    v = receptive_field(model, x, "conv2", (4, 4))   # v.box (analysis) and v.effective (gradient)

Names are imported on first use (``cnnspec.explain.cli`` is imported by ``cnnspec --help``).
"""
__all__ = ["Explanation", "explain", "gradcam", "saliency", "smoothgrad", "occlusion", "upsample",
           "Ascent", "ascent", "FieldView", "receptive_field", "METHODS"]

_WHERE = {"Explanation": "methods", "explain": "methods", "gradcam": "methods", "saliency": "methods",
          "smoothgrad": "methods", "occlusion": "methods", "upsample": "methods", "METHODS": "methods",
          "Ascent": "patterns", "ascent": "patterns", "FieldView": "fields", "receptive_field": "fields"}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"cnnspec.explain.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'cnnspec.explain' has no attribute {name!r}")
