"""An Otter-Grader test file (Otter's exception-based format) that grades layer functions with
cnnspec: one test case per problem, the submission graded once in cnnspec's sandbox.

In an Otter assignment this is tests/q_layers.py; ASSIGNMENT and SUBMISSION are paths from the
folder Otter runs the tests in (the assignment.toml and secret shipped with the autograder, the
student's notebook)."""
import os

from otter.test_files import test_case

from cnnspec.grade.otter import require

OK_FORMAT = False

name = "q_layers"
points = 6

ASSIGNMENT = os.environ.get("CNNSPEC_ASSIGNMENT", "assignment.toml")
SUBMISSION = os.environ.get("CNNSPEC_SUBMISSION", "layers.ipynb")


@test_case(points=2, hidden=False)
def test_relu_forward():
    require(ASSIGNMENT, SUBMISSION, "relu_forward")


@test_case(points=3, hidden=False)
def test_dense_backward():
    require(ASSIGNMENT, SUBMISSION, "dense_backward")


@test_case(points=1, hidden=True)
def test_dense_backward_leaves_its_inputs_alone():
    require(ASSIGNMENT, SUBMISSION, "dense_backward", check="inputs")
