# Appended to solution.py by the tests: a hostile submission.
# Tries to carry the hidden cases' inputs out through what the report shows: the name of an
# exception class, the path of a file it is refused, and the process's exit status.
import os as _os


def relu_forward(x):
    tag = "S" + "_".join(map(str, x.shape)) + "_V" + ("%.4f" % float(x.flat[0])).replace("-", "m").replace(".", "p")
    raise type(tag, (Exception,), {})("boom")


def relu_backward(dout, x):
    try:
        open("/leak/shape=%s/first=%r" % (x.shape, float(x.flat[0])))
    except Exception:
        pass
    return dout * (x > 0)


_calls = [0]


def sigmoid_forward(x):
    _calls[0] += 1
    if _calls[0] == __EXIT_AT__:            # the first call of the first hidden case
        _os._exit(100 + x.shape[0])
    return 1 / (1 + np.exp(-x))
