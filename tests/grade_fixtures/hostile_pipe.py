# Appended to solution.py by the tests: a hostile submission.
# Writes to the grader's pipe: garbage, and a message claiming to be enormous.
import os
import struct
import sys


def relu_forward(x):
    os.write(int(sys.argv[2]), b"\x00\x00\x00\x00\x00\x00\x00\x10garbage garbage!")
    return np.maximum(x, 0)


def sigmoid_forward(x):
    os.write(int(sys.argv[2]), struct.pack(">Q", 1 << 62))
    return 1 / (1 + np.exp(-x))
