# Appended to solution.py by the tests: a hostile submission.
# relu_forward ends the process; sigmoid_forward raises SystemExit.
import os
import sys


def relu_forward(x):
    os._exit(3)


def sigmoid_forward(x):
    sys.exit("bye")
