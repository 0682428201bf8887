# A probe, not a graded fixture: finds the sandbox's in-process guard through the frames and
# switches it off, then tries what the guard would have refused; relu_forward raises
# ValueError(JSON) with what happened. The __PLACEHOLDERS__ are filled in by the tests.
import json
import sys


def _disarm():
    frame = sys._getframe(0)
    while frame is not None:
        guard = frame.f_locals.get("guard")
        if guard is not None and hasattr(guard, "forbidden"):
            guard.forbidden, guard.deny, guard.read_roots, guard.workdir = frozenset(), [], ("/",), "/"
            return True
        frame = frame.f_back
    return False


def _attempt(action):
    try:
        return repr(action())[:40]
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"[:60]


_DISARMED = _disarm()


def relu_forward(x):
    info = {"disarmed": _DISARMED,
            "secret": _attempt(lambda: open("__SECRET__").read()),
            "assignment": _attempt(lambda: open("__SECRET__".replace(".secret", "assignment.toml")).read()),
            "write": _attempt(lambda: open("__OUTSIDE__", "w").write("x"))}
    raise ValueError(json.dumps(info))
