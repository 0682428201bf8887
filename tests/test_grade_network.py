"""Network-level problems: specs/lenet5.cnn run by the engine with the student's functions (in the
sandbox) in place of the built-in layers, against the same network run by the reference."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cnnspec.grade import reports
from cnnspec.grade.assignment import load_assignment
from cnnspec.grade.grader import Grader
from grade_fixtures.support import SOLUTION, reference, small_assignment, submission

pytest.importorskip("cnnspec.engine.model")

NETWORK = """
[[networks]]
name = "lenet5"
spec = "lenet5.cnn"
points = 30
batch = 4
train_samples = 64
train_batch = 16
"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("network")
    assignment = small_assignment(directory / "a", [], limits={"time_per_case": 3.0}, extra=NETWORK)
    shutil.copy(Path(__file__).resolve().parent.parent / "specs" / "lenet5.cnn", directory / "a")
    grader = Grader(load_assignment(assignment), reference=reference())
    template = directory / "template.py"
    template.write_text("import numpy as np\n\ndef conv2d_forward(x, w, b, stride, pad):\n"
                        "    raise NotImplementedError\n")
    empty = directory / "empty.py"
    empty.write_text("import numpy as np\n")
    loss_arrays = {}
    for name, wrap in (("loss_in_array", "np.array([loss])"), ("three_losses", "np.array([loss] * 3)")):
        loss_arrays[name] = directory / f"{name}.py"
        loss_arrays[name].write_text(SOLUTION.read_text() + (
            "\n\n_own_loss = softmax_cross_entropy\n\n\ndef softmax_cross_entropy(logits, y):\n"
            f"    loss, dlogits = _own_loss(logits, y)\n    return {wrap}, dlogits\n"))
    paths = {"solution": SOLUTION, "template": template, "empty": empty, **loss_arrays,
             "flipped": submission(directory, "mutant_kernel_flipped"),
             "onehot": submission(directory, "mutant_cross_entropy_gradient_without_onehot"),
             "loop": submission(directory, "hostile_infinite_loop")}
    with ThreadPoolExecutor(max_workers=2) as pool:        # two sandboxes at a time
        return dict(zip(paths, pool.map(grader.grade, paths.values())))


def checks(result):
    return {c.key: c for c in result.problem("lenet5").checks}


def test_a_correct_solution_matches_the_reference_network_and_trains(graded):
    result = graded["solution"]
    assert result.score == result.max_score == 30, reports.text(result)


def test_a_missing_function_fails_the_network_with_its_name(graded):
    result = graded["template"]
    assert result.score == 0
    for check in checks(result).values():
        assert check.messages == ["needs your conv2d_forward, which is not implemented"]


def test_a_file_without_functions_gets_nothing_from_the_built_in_layers(graded):
    result = graded["empty"]
    assert result.score == 0
    for check in checks(result).values():
        assert check.messages == ["needs your conv2d_forward, which is not defined"]


def test_a_flipped_kernel_changes_outputs_and_gradients_but_still_trains(graded):
    found = checks(graded["flipped"])
    assert not found["outputs"].ok and "differs from the reference network's" in found["outputs"].messages[0]
    assert not found["gradients"].ok and "conv" in found["gradients"].messages[0]
    assert found["training"].ok                            # a true convolution learns just as well


def test_a_wrong_forward_is_named_and_its_gradients_not_blamed_on_correct_backwards(graded):
    """The flipped kernel is in conv2d_forward only: the submission's dense_backward and
    softmax_cross_entropy are the solution's own, so the feedback must not send the student there;
    it names the first layer whose output differs and the forward function that computes it."""
    found = checks(graded["flipped"])
    assert ("the first layer whose output differs is `conv1`'s output (look at your conv2d_forward)"
            in found["outputs"].messages[0]), found["outputs"].messages
    message = found["gradients"].messages[0]
    assert "the forward pass already differs, first at `conv1`'s output (look at your conv2d_forward)" in message
    assert "dense_backward" not in message and "softmax_cross_entropy" not in message, message


def test_wrong_gradients_name_the_functions_to_look_at(graded):
    found = checks(graded["onehot"])
    assert found["outputs"].ok and not found["gradients"].ok
    message = found["gradients"].messages[0]
    assert "the first wrong gradient from the loss back is dense3's" in message
    assert message.endswith("look at your dense_backward, softmax_cross_entropy")


def test_a_hanging_function_fails_the_network_in_time(graded):
    result = graded["loop"]
    for check in checks(result).values():
        assert not check.ok and "time limit exceeded in relu_forward" in check.messages[0]
    assert result.seconds < 15


def test_a_loss_returned_in_an_array_is_graded(graded):
    """A loss in a 1-element array is that number, as the function's own check takes it (its
    shape check aside); three numbers fail the network's checks by name, and grading goes on."""
    result = graded["loss_in_array"]
    assert result.problem("lenet5").score == 30, reports.text(result)
    result = graded["three_losses"]
    failed = [c for c in checks(result).values() if c.passed < c.total]
    assert failed and result.problem("lenet5").score < 30
    assert any("backend `softmax_cross_entropy` returned an array of shape (3,) as the loss; expected one number"
               in why for c in failed for why in c.messages), reports.text(result)
