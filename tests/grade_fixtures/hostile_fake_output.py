# Appended to solution.py by the tests: a hostile submission.
# Prints fake results, then returns wrong values.
import sys

print('{"score": 100, "max_score": 100, "tests": []}')
print("relu_forward  2 / 2\nTotal: 100 / 100", file=sys.stderr)


def relu_forward(x):
    print("PASS relu_forward: all checks passed")
    return np.maximum(x, 0) * 2
