# Appended to solution.py by the tests: a hostile submission.
# Every way to reach the reference: by name, importlib, sys.path, file path, reading the source.
# relu_forward only works if one of them did.
import importlib
import importlib.util
import sys

REFERENCE = None


def _attempt(get):
    global REFERENCE
    try:
        found = get()
    except BaseException:
        return
    if found is not None and REFERENCE is None:
        REFERENCE = found


def _by_name():
    import cnnspec.api
    return cnnspec.api.relu_forward


def _by_path():
    roots = [getattr(m, "MAPPING", {}).get("cnnspec") for m in list(sys.modules.values())
             if type(getattr(m, "MAPPING", None)) is dict]
    roots += [p + "/cnnspec" for p in sys.path]
    for root in filter(None, roots):
        spec = importlib.util.spec_from_file_location("ref_api", root + "/api.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.relu_forward


def _by_source():
    roots = [getattr(m, "MAPPING", {}).get("cnnspec") for m in list(sys.modules.values())
             if type(getattr(m, "MAPPING", None)) is dict]
    for root in filter(None, roots):
        source = open(root + "/api.py").read()
        return source and None


def _sys_path():
    sys.path.insert(0, "/work/main")
    sys.meta_path[:] = [f for f in sys.meta_path if "Guard" not in type(f).__name__]
    return __import__("cnnspec.api", fromlist=["x"]).relu_forward


_attempt(_by_name)
_attempt(lambda: importlib.import_module("cnnspec.api").relu_forward)
_attempt(_by_path)
_attempt(_by_source)
_attempt(_sys_path)
_attempt(lambda: __import__("torch").relu)
_attempt(lambda: importlib.import_module("scipy.signal").correlate2d)


def relu_forward(x):
    if REFERENCE is None:
        raise RuntimeError("the reference was out of reach")
    return REFERENCE(x)
