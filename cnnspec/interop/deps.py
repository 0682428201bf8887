"""The optional dependencies of export and import: a clear message naming the pip command when one
is missing (never an ImportError traceback)."""
from __future__ import annotations

import importlib

from cnnspec.errors import CnnSpecError

# module -> (what needs it, the extra that installs it)
EXTRAS = {
    "onnx": ("ONNX export and import", "onnx"),
    "onnxruntime": ("running ONNX models", "onnx"),
    "torch": ("PyTorch export", "torch"),
}


def require(module: str):
    """Import ``module`` or raise a CnnSpecError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name not in (None, module) and not (exc.name or "").startswith(module + "."):
            raise                                   # the package is there but broken: show why
        what, extra = EXTRAS.get(module, (module, module))
        pip = ("pip install torch  (the CPU build: pip install torch --index-url "
               "https://download.pytorch.org/whl/cpu)") if module == "torch" else f"pip install {module}"
        raise CnnSpecError(f"{what} needs the `{module}` package, which is not installed",
                           hint=f"pip install 'cnnspec[{extra}]', or {pip}") from None
