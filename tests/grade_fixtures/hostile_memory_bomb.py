# Appended to solution.py by the tests: a hostile submission.
# Memory without end: relu_forward keeps reserving (the address-space limit stops it),
# relu_backward asks for 80 GB at once.
def relu_forward(x):
    hoard = []
    while True:
        hoard.append(np.empty(100_000_000))


def relu_backward(dout, x):
    return [0.0] * 10_000_000_000
