# Appended to solution.py by the tests: a hostile submission.
# Processes and threads: a fork bomb, a subprocess, a thread.
import os
import subprocess
import threading


def relu_forward(x):
    while True:
        os.fork()


def relu_backward(dout, x):
    subprocess.Popen(["sleep", "100.0417"])      # a duration no other program on the machine sleeps
    return dout * (x > 0)


def sigmoid_forward(x):
    threading.Thread(target=lambda: None).start()
    return 1 / (1 + np.exp(-x))
