# Appended to solution.py by the tests: a hostile submission.
# relu_forward never returns.
def relu_forward(x):
    while True:
        pass
