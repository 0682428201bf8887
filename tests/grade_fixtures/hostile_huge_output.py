# Appended to solution.py by the tests: a hostile submission.
# Returns an output too big to copy into a reply within the sandbox's memory limit (512 MB,
# the test's limit 1,024 MB).
def relu_forward(x):
    return np.empty((8000, 8000))           # virtual memory: its copy fails at once
