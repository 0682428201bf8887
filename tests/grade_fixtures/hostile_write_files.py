# Appended to solution.py by the tests, with the __PLACEHOLDERS__ filled in: a hostile submission.
# Tries to write the grader's outputs and the assignment, and to read the secret and another
# student's file; relu_forward is right only if every one of those attempts was refused.
import os

ATTEMPTS = []


def _try(what, action):
    try:
        action()
        ATTEMPTS.append(what)
    except Exception:
        pass


def _write(path, text="HACKED"):
    with open(path, "w") as f:
        f.write(text)


_try("cwd results.json", lambda: _write("results.json", '{"score": 100}'))       # harmless
_try("/autograder results", lambda: _write("/autograder/results/results.json", '{"score": 100}'))
_try("report", lambda: _write("__OUTPUT__", '{"score": 100}'))
_try("gradebook", lambda: _write("__GRADEBOOK__", "student,score\nmallory,100\n"))
_try("assignment", lambda: open("__ASSIGNMENT__", "a").write("\n# hacked\n"))
_try("secret", lambda: open("__SECRET__").read())
_try("other student", lambda: open("__OTHER__").read())
_try("env secret", lambda: os.environ["CNNSPEC_GRADE_SECRET"])
_try("remove", lambda: os.remove("__GRADEBOOK__"))


def relu_forward(x):
    if ATTEMPTS != ["cwd results.json"]:                 # its own working directory is allowed
        return x * 0 + 100.0
    return np.maximum(x, 0)
