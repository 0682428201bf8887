"""The auto-grader: assignments, cases, the wire format, checks, full grades, reports, CLI, batch,
Gradescope bundle. Hostile submissions: test_grade_hostile.py; mutants: test_grade_mutants.py."""
from __future__ import annotations

import ast
import csv
import io
import json
import os
import stat
import struct
import time
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest

from cnnspec import api
from cnnspec.cli import main as cli_main
from cnnspec.errors import CnnSpecError
from cnnspec.grade import protocol, reports
from cnnspec.grade.assignment import (CHECKS, DEFAULT_POINTS, SECRET_ENV, init_assignment, load_assignment,
                                      render_toml)
from cnnspec.grade.batch import csv_cell, find_submission, run_batch
from cnnspec.grade.bundle import make_bundle, warm_up
from cnnspec.grade.cases import EDGES, make_cases
from cnnspec.grade.checks import output_problem, rel_error, unwrap, value_problem
from cnnspec.grade.functions import FUNCTIONS, GROUPS, template
from cnnspec.grade.grader import Grader
from cnnspec.grade.sandbox import Limits
from grade_fixtures.support import SOLUTION, reference, small_assignment

ALL = list(GROUPS["core"])           # the functions of `grade init`'s default assignment


# -- the assignment ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def homework(tmp_path_factory):
    """`grade init`'s assignment, without the network problem (test_grade_network.py has it)."""
    directory = tmp_path_factory.mktemp("hw")
    init_assignment(directory)
    toml = directory / "assignment.toml"
    toml.write_text(toml.read_text().split("[[networks]]")[0])
    return directory


def test_init_writes_a_ready_assignment(tmp_path):
    written = {p.name for p in init_assignment(tmp_path)}
    assert written == {"assignment.toml", "layers.py", "lenet5.cnn", ".secret"}
    assert stat.S_IMODE((tmp_path / ".secret").stat().st_mode) == 0o600
    a = load_assignment(tmp_path)
    assert [p.name for p in a.functions] == ALL
    assert [p.points for p in a.functions] == [DEFAULT_POINTS[n] for n in ALL]
    assert a.networks[0].name == "lenet5" and a.networks[0].spec == tmp_path / "lenet5.cnn"
    assert a.limits == Limits() and "cnnspec" in a.forbidden and "torch" in a.forbidden
    with pytest.raises(CnnSpecError, match="already has"):
        init_assignment(tmp_path)
    secret = (tmp_path / ".secret").read_text()
    init_assignment(tmp_path, force=True)
    assert (tmp_path / ".secret").read_text() == secret          # --force keeps the secret


def test_every_key_is_documented_in_the_generated_toml():
    text = render_toml()
    from cnnspec.grade.assignment import _SCHEMA

    for table, keys in _SCHEMA.items():
        for key in keys:
            lines = [line for line in text.splitlines() if line.lstrip("# ").startswith(f"{key} =")]
            assert any("#" in line for line in lines), (table, key)     # with its comment
    for check in CHECKS:
        assert f"\n{check} = " in text


def test_template_has_every_signature_shapes_and_raises():
    source = template(ALL)
    tree = ast.parse(source)
    defined = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert list(defined) == ALL
    for name, node in defined.items():
        assert [a.arg for a in node.args.args] == list(FUNCTIONS[name].params)
        doc = ast.get_docstring(node)
        assert doc and ("(N" in doc or "like x" in doc or "shape" in doc), name
    namespace = {}
    exec(compile(source, "layers.py", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["conv2d_forward"](None, None, None, (1, 1), (0, 0, 0, 0))


BAD = [
    ("[limits]\ntime_per_cse = 3\n", r"assignment.toml:2:1: error: unknown key `time_per_cse` in \[limits\]",
     "did you mean `time_per_case`"),
    ("[defaults]\npublic_cases = \"many\"\n", "2:1: error: `public_cases` in .* must be an integer", None),
    ("[functions.relu_forwrd]\n", "1:1: error: unknown function `relu_forwrd`", "did you mean `relu_forward`"),
    ("[functions.relu_forward]\npoints = = 3\n", "2:10: error: invalid TOML", None),
    ("[functions.relu_forward]\npoints = -1\n", "2:1: error: `points` .* at least 0", None),
    ("[limit]\n[functions.relu_forward]\n", "error: unknown table `limit`", "did you mean `\\[limits\\]`"),
    ("[imports]\nforbidden = [\"os path\"]\n", "2:1: error: `forbidden` must list module names", None),
    ("[functions.relu_forward]\n[[networks]]\nname = \"n\"\nspec = \"missing.cnn\"\n",
     "4:1: error: network file .*missing.cnn does not exist", None),
    ("[assignment]\nname = \"x\"\n", "error: the assignment grades nothing", None),
    ("[functions.relu_forward]\n[limits]\nuser = \" \"\n", r"3:1: error: `user` in \[limits\] must name a user",
     "`nobody` is the default"),
]


@pytest.mark.parametrize("text, message, hint", BAD)
def test_a_bad_assignment_is_a_located_error(tmp_path, text, message, hint):
    path = tmp_path / "assignment.toml"
    path.write_text(text)
    with pytest.raises(CnnSpecError) as info:
        load_assignment(path)
    rendered = info.value.render()
    assert info.value.file == str(path)
    import re

    assert re.search(message, rendered), rendered
    if hint:
        assert re.search(hint, rendered)


@pytest.mark.parametrize("user, message", [
    ("nosuchuser-cnnspec", "there is no user 'nosuchuser-cnnspec' on this machine"),
    ("root", "whose uid is 0: the sandbox never runs submissions as root"),
])
def test_a_sandbox_user_root_cannot_switch_to_is_a_located_error(tmp_path, user, message):
    """As root (CI, Gradescope), where the sandbox switches to `[limits] user`, a user that does
    not exist, or is root, stops the assignment's loading with its line (it was a traceback once
    grading had started, and no report); an ordinary user's sandbox runs as that user, so there
    the name is not used and the assignment loads."""
    path = tmp_path / "assignment.toml"
    path.write_text(f'[functions.relu_forward]\n\n[limits]\nuser = "{user}"\n')
    if os.geteuid() != 0:
        assert load_assignment(path).limits.user == user
        return
    with pytest.raises(CnnSpecError) as info:
        load_assignment(path)
    rendered = info.value.render()
    assert f"{path}:4:1: error: `user` in [limits]" in rendered and message in rendered, rendered


def test_cli_bad_assignment_exits_1_with_the_location(tmp_path, capsys):
    path = tmp_path / "assignment.toml"
    path.write_text("[functions.relu_forward]\n\n[limits]\nmemory = 5\n")
    assert cli_main(["grade", str(path), str(SOLUTION)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4:1: error: unknown key `memory`" in err and "did you mean `memory_mb`" in err


def test_the_hidden_seed_comes_from_the_secret(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    a = load_assignment(small_assignment(tmp_path, ["relu_forward"]))
    seed = a.hidden_seed()
    (tmp_path / ".secret").write_text("another secret")
    assert a.hidden_seed() != seed
    monkeypatch.setenv(SECRET_ENV, "from the environment")
    from_env = a.hidden_seed()
    (tmp_path / ".secret").unlink()
    assert a.hidden_seed() == from_env                      # the variable takes precedence
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(CnnSpecError, match="no secret for the hidden cases"):
        a.hidden_seed()
    Grader(a, reference=reference(), public_only=True)     # --public needs no secret


# -- cases ---------------------------------------------------------------------------------------

def test_cases_are_deterministic_and_cover_the_edges():
    for name in ALL:
        a, b = make_cases(name, 5, 2, "public"), make_cases(name, 5, 2, "public")
        assert [c.kind for c in a] == ["basic", "basic", *EDGES[FUNCTIONS[name].family]]
        for x, y in zip(a, b):
            for u, v in zip(x.args, y.args):
                assert (u is None and v is None) or np.array_equal(np.asarray(u), np.asarray(v))
        other = make_cases(name, 6, 2, "public")
        assert not np.array_equal(a[0].args[0], other[0].args[0])


def test_cases_keep_away_from_kinks_and_ties():
    for case in make_cases("relu_backward", 1, 5, "public"):
        x = case.args[1]
        if case.kind == "zeros in the input":   # the one case with the kink, for layer-api.md's rule
            assert np.count_nonzero(x == 0) == len(x.reshape(-1)[::3]) and np.abs(x[x != 0]).min() > 1e-3
        else:
            assert np.abs(x).min() > 1e-3
    for case in make_cases("maxpool2d_backward", 1, 5, "public"):
        values = np.sort(case.args[1].ravel())
        if case.kind == "ties":               # the one case made of ties, for layer-api.md's tie rule
            assert len(np.unique(values)) <= 3
        else:
            assert np.diff(values).min() > 1e-3
    kinds = {c.kind: c for c in make_cases("conv2d_forward", 1, 1, "public")}
    x, w, b, stride, pad = kinds["non-square"].args
    assert x.shape[2] != x.shape[3] and w.shape[2] != w.shape[3] and stride[0] != stride[1]
    assert len(set(kinds["asymmetric padding"].args[4])) > 1
    assert kinds["1x1 kernel"].args[1].shape[2:] == (1, 1) and kinds["no bias"].args[2] is None
    assert kinds["batch 1"].args[0].shape[0] == 1 and kinds["one channel"].args[0].shape[1] == 1


# -- the wire format -------------------------------------------------------------------------------

def test_protocol_round_trip():
    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, None, "s"],
             "c": (np.array(True), np.int64(4))}
    out = protocol.decode(protocol.encode(value)[8:])
    assert out["a"].dtype == np.float32 and np.array_equal(out["a"], value["a"])
    assert out["b"] == [1, 2.5, None, "s"] and out["c"][1] == 4 and out["c"][0].dtype == bool
    assert out["a"].flags.writeable and out["a"].flags.owndata
    scalar = protocol.decode(protocol.encode({"$scalar": np.asarray(np.float32(0.25))})[8:])["$scalar"]
    assert scalar.shape == () and scalar.dtype == np.float32 and scalar == 0.25      # stays 0-d


def _body(header: dict, data: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + data


@pytest.mark.parametrize("body", [
    b"\x80\x04\x95" + b"pickle" * 3,                                           # a pickle
    _body({"h": {"$a": 0}, "a": [["|O", [1]]]}, b"\0" * 8),                    # object dtype
    _body({"h": {"$a": 0}, "a": [[">f8", [1]]]}, b"\0" * 8),                   # big-endian
    _body({"h": {"$a": 0}, "a": [["<f8", [2]]]}, b"\0" * 8),                   # data too short
    _body({"h": {"$a": 0}, "a": [["<f8", [1]]]}, b"\0" * 9),                   # trailing bytes
    _body({"h": {"$a": 1}, "a": [["<f8", [1]]]}, b"\0" * 8),                   # bad reference
    _body({"h": 1, "a": [["<f8", [-1]]]}),                                     # negative size
    _body({"h": 1, "a": [["<f8", [1.5]]]}),                                    # float size
    _body({"h": 1, "a": [], "x": 2}),                                          # extra key
    _body({"h": 1, "a": [["<f8", [1] * 9]]}),                                  # too many axes
    struct.pack(">I", 10**9) + b"{}",                                          # header too long
    _body({"h": json.loads("[" * 50 + "]" * 50), "a": []}),                    # too deep
])
def test_protocol_refuses_anything_else(body):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(body)


# -- judging outputs ---------------------------------------------------------------------------------

def test_relative_error_is_cs231ns():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0
    assert rel_error([1.0], [3.0]) == pytest.approx(0.5)
    assert rel_error([0.0], [1e-12]) == pytest.approx(1e-4)           # the 1e-8 floor
    assert rel_error([np.nan], [1.0]) == float("inf")


def test_returned_values_are_judged_strictly():
    expected = np.zeros((2, 3))
    assert unwrap({"$list": [np.zeros(2)]}, ("out",))[1] == "returned a list of 1 values; expected one array"
    assert "expected a tuple (dx, dw, db)" in unwrap(np.zeros(2), ("dx", "dw", "db"))[1]
    (bad,), _ = unwrap({"$bad": "a list, not a NumPy array"}, ("out",))
    assert output_problem("out", bad, expected, np.float64) == "out is a list, not a NumPy array"
    assert "shape (3, 2); expected (2, 3)" in output_problem("out", np.zeros((3, 2)), expected, np.float64)
    assert "dtype float32; expected float64" in output_problem("out", np.zeros((2, 3), np.float32),
                                                                 expected, np.float64)
    assert output_problem("db", np.zeros(2), None, np.float64) == "db should be None here (b is None)"
    assert output_problem("loss", 1.5, 1.0, np.float64) is None
    assert "expected a number" in output_problem("loss", np.zeros(2), 1.0, np.float64)
    got = np.zeros((2, 3))
    got[1, 2] = np.nan
    assert value_problem("out", got, expected, 1e-7, True) == "out contains NaN"
    got = expected.copy()
    got[1, 0] = 0.5
    message = value_problem("out", got, expected, 1e-7, show_values=True)
    assert "first large difference at index (1, 0): got 0.5, expected 0" in message
    assert "index" not in value_problem("out", got, expected, 1e-7, show_values=False)


# -- full grades ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template_result(homework):
    grader = Grader(load_assignment(homework), reference=reference())
    return grader.grade(homework / "layers.py")


@pytest.fixture(scope="module")
def solution_result(homework, template_result):
    """A full grade and its time, the reference's kernels already compiled (by the template's
    grade: a warm numba cache), its cases not (a new Grader)."""
    grader = Grader(load_assignment(homework), reference=reference())
    started = time.monotonic()
    result = grader.grade(SOLUTION, display_name="solution.py")
    return result, time.monotonic() - started


def test_a_correct_numpy_solution_gets_full_marks(solution_result):
    result, seconds = solution_result
    assert not result.public_only
    assert result.score == result.max_score == sum(DEFAULT_POINTS.values()), reports.text(result)
    for p in result.problems:
        assert all(c.ok for c in p.checks) and not p.notes, p.name
        kinds = {c.key: c.total for c in p.checks}
        assert kinds["reference"] == 6 and kinds["edge"] == 2 * len(EDGES[FUNCTIONS[p.name].family])
    assert seconds < 20


def test_printed_output_never_shows_hidden_inputs(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + """
print("imported")
_relu = relu_forward
def relu_forward(x):
    print("INPUT", x.shape, float(x.ravel()[0]))
    return _relu(x)
""")
    assignment = load_assignment(small_assignment(tmp_path / "a", ["relu_forward"]))
    full = Grader(assignment, reference=reference()).grade(path)
    public = Grader(assignment, reference=reference(), public_only=True).grade(path)
    assert "INPUT" in public.output and "imported" in public.output
    assert "INPUT" not in full.output and full.output.startswith("imported")
    assert "could reveal the hidden cases" in full.output
    for text in (reports.text(full), json.dumps(reports.gradescope(full)), reports.junit(full)):
        assert "INPUT" not in text


def test_a_crash_costs_its_case_only(tmp_path):
    """The case that raised earns nothing (no output: no values, shape or inputs credit); the
    other cases keep theirs."""
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + """
_relu = relu_forward
def relu_forward(x):
    if x.shape[0] == 1:
        raise ValueError("batch of one")
    return _relu(x)
""")
    assignment = load_assignment(small_assignment(tmp_path / "a", ["relu_forward"]))
    problem = Grader(assignment, reference=reference()).grade(path).problem("relu_forward")
    failed = {c.key: (c.passed, c.total) for c in problem.checks if not c.ok}
    assert set(failed) == {"shape_dtype", "edge", "inputs"}, failed
    assert all(passed == total - 2 for passed, total in failed.values()), failed   # public and hidden
    assert any("ValueError: batch of one" in note for note in problem.notes)


@pytest.mark.parametrize("db, kept", [("None", 2 / 3), ("db + 1", 2 / 3), ("db[:1]", 2 / 3),
                                       ("np.zeros_like(db)", 2 / 3)])
def test_right_outputs_beside_a_wrong_one_earn_their_share(tmp_path, db, kept):
    """A backward with dx and dw right and db missing, wrong or of the wrong shape earns 2/3 of each
    case's value credit (as tests that check dx, dw and db apart would give), and its inputs and
    numerical-gradient checks (it scored 0.83 of 15 with db None, 4.29 with db wrong); shape and
    dtype only where db is an array of the right shape. The same outputs all wrong earn nothing."""
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + f"""
_right = conv2d_backward
def conv2d_backward(dout, x, w, b, stride, pad):
    dx, dw, db = _right(dout, x, w, b, stride, pad)
    return dx, dw, ({db} if db is not None else None)
""")
    assignment = load_assignment(small_assignment(tmp_path / "a", ["conv2d_backward"], public_cases=2))
    grader = Grader(assignment, reference=reference())
    problem = grader.grade(path).problem("conv2d_backward")
    checks = {c.key: c for c in problem.checks}
    cases = checks["reference"].total
    assert checks["reference"].passed == 0 and checks["reference"].fraction == pytest.approx(kept)
    assert "2 of 3 outputs right" in checks["reference"].messages[0]
    # the numerical gradient: dx and dw agree with it, db does not where it is compared (an array of its shape)
    assert checks["inputs"].ok and checks["numeric"].fraction == pytest.approx(1.0 if db in ("None", "db[:1]") else kept)
    assert checks["shape_dtype"].ok == (db in ("db + 1", "np.zeros_like(db)"))
    assert checks["edge"].fraction > 0.6 and cases == 3
    path.write_text(SOLUTION.read_text() + """
def conv2d_backward(dout, x, w, b, stride, pad):
    return np.zeros_like(x), np.zeros_like(w), None if b is None else np.zeros_like(b)
""")
    nothing = grader.grade(path).problem("conv2d_backward")
    assert nothing.score < 0.02 * nothing.max_score


def test_a_1d_stride_read_as_a_number_gets_a_hint(tmp_path):
    """layer-api.md lists conv1d's pad as (left, right) but not its stride's form; the template
    says (s,). Code that divides by the stride as a number raises a TypeError about a tuple in
    every case: the feedback says how the stride comes."""
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + """
def conv1d_forward(x, w, b, stride, pad):
    N, C, L = x.shape
    F, _, K = w.shape
    OL = 1 + (L + pad[0] + pad[1] - K) // stride
    xp = np.pad(x, ((0, 0), (0, 0), tuple(pad)))
    out = np.stack([np.tensordot(xp[:, :, i * stride:i * stride + K], w, axes=([1, 2], [1, 2]))
                    for i in range(OL)], axis=2)
    return out + b[:, None] if b is not None else out
""")
    assignment = load_assignment(small_assignment(tmp_path / "a", ["conv1d_forward"]))
    problem = Grader(assignment, reference=reference()).grade(path).problem("conv1d_forward")
    assert problem.score == 0
    assert any("in 1-D the stride is a tuple of one number, (s,)" in note for note in problem.notes), problem.notes


def test_the_float32_call_must_compute_the_same_function(tmp_path):
    """layer-api.md: functions "must work for float32 and float64". A conv2d_forward right for
    float64 inputs and all zeros for float32 ones computes nothing in float32: it loses the value
    checks, named; one that computes in float64 and returns float32 (a legitimate way) loses nothing."""
    wrong, widened = tmp_path / "wrong.py", tmp_path / "widened.py"
    wrong.write_text(SOLUTION.read_text() + """
_conv = conv2d_forward
def conv2d_forward(x, w, b, stride, pad):
    out = _conv(x, w, b, stride, pad)
    return np.zeros_like(out) if x.dtype == np.float32 else out
""")
    widened.write_text(SOLUTION.read_text() + """
_conv = conv2d_forward
def conv2d_forward(x, w, b, stride, pad):
    wide = lambda a: None if a is None else a.astype(np.float64)
    return _conv(wide(x), wide(w), wide(b), stride, pad).astype(x.dtype)
""")
    grader = Grader(load_assignment(small_assignment(tmp_path / "a", ["conv2d_forward"])), reference=reference())
    problem = grader.grade(wrong).problem("conv2d_forward")
    failed = {c.key for c in problem.checks if not c.ok}
    assert {"reference", "edge"} <= failed, reports.text(grader.grade(wrong))
    messages = [m for c in problem.checks for m in c.messages]
    assert any("with float32 inputs, out does not match" in m for m in messages), messages
    result = grader.grade(widened)
    assert result.score == result.max_score, reports.text(result)


def test_a_namedtuple_of_gradients_is_a_tuple(tmp_path):
    """dense_backward returns (dx, dw, db): a namedtuple of them is a tuple (isinstance, indexing,
    unpacking), and the values are the solution's own, so it gets full marks -- it scored 0 with
    "returned an object of type Grads, not a NumPy array; expected a tuple (dx, dw, db)"."""
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + """
import collections
Grads = collections.namedtuple("Grads", "dx dw db")
_dense_backward = dense_backward
def dense_backward(dout, x, w, b):
    return Grads(*_dense_backward(dout, x, w, b))
""")
    assignment = small_assignment(tmp_path / "a", ["dense_backward"])
    result = Grader(load_assignment(assignment), reference=reference()).grade(path)
    assert result.score == result.max_score, reports.text(result)


def test_a_name_bound_to_something_else_than_a_function_is_said_so(tmp_path):
    """`relu_forward = 5` at the end of the file is defined: the report says what it is, not
    "relu_forward is not defined in your file"."""
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + "\nrelu_forward = 5\n")
    assignment = small_assignment(tmp_path / "a", ["relu_forward"])
    text = reports.text(Grader(load_assignment(assignment), reference=reference()).grade(path))
    assert "relu_forward is not a function: it is an object of type int" in text, text
    assert "not defined" not in text, text


@pytest.mark.parametrize("name, textbook", [
    ("tanh_backward", lambda dout, x: dout * (1 - np.tanh(x) ** 2)),
    ("sigmoid_backward", lambda dout, x: dout * (1 / (1 + np.exp(-x))) * (1 - 1 / (1 + np.exp(-x))))])
def test_a_textbook_float32_backward_of_large_inputs_is_not_a_mistake(name, textbook):
    """At |x| ~ 9 float32 keeps hardly a digit of 1 - tanh(x)**2 (1e-8 next to 1): the textbook
    formula is off by far more than 1e-4 of its tiny output, by a rounding of dout's size; off by
    1% of dout, it is a mistake."""
    from cnnspec.grade.checks import float32_problem, upstream_scale
    from cnnspec.grade.functions import FUNCTIONS

    x = np.linspace(8.5, 10.5, 12, dtype=np.float32).reshape(3, 4)
    dout = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    expected = getattr(api, name)(dout, x)
    got = textbook(dout, x).astype(np.float32)
    scale = upstream_scale(FUNCTIONS[name], (dout, x))
    assert np.max(np.abs(got - expected)) > 3e-4 * np.max(np.abs(expected))   # digits lost
    assert float32_problem("dx", got, expected) is not None                    # by the output's scale
    assert float32_problem("dx", got, expected, scale) is None
    assert float32_problem("dx", got + 0.01 * dout, expected, scale) is not None


def test_losses_may_return_numpy_scalars(tmp_path):
    """np.mean returns a NumPy scalar: a loss that is one (float64, or float32 for float32
    inputs) is as good as a Python float."""
    path = tmp_path / "layers.py"
    path.write_text(SOLUTION.read_text() + """

_mse, _sce = mse_loss, softmax_cross_entropy
def mse_loss(pred, target):
    loss, d = _mse(pred, target)
    return pred.dtype.type(loss), d
def softmax_cross_entropy(logits, y):
    loss, d = _sce(logits, y)
    return np.float64(loss), d
""")
    assignment = small_assignment(tmp_path / "a", ["mse_loss", "softmax_cross_entropy"])
    result = Grader(load_assignment(assignment), reference=reference()).grade(path)
    assert result.score == result.max_score, reports.text(result)


def test_the_reference_graded_as_a_submission_gets_full_marks(homework, tmp_path):
    """cnnspec.api itself, through the sandbox (trusted: allowed to import cnnspec)."""
    pytest.importorskip("cnnspec.api")
    shim = tmp_path / "reference.py"
    shim.write_text("from cnnspec.api import *\n")
    assignment = load_assignment(homework)
    assignment.limits.time_per_case = 300          # time to compile the kernels if the cache is cold
    result = Grader(assignment, reference=reference()).grade(shim, trusted=True)
    assert result.score == result.max_score, reports.text(result)
    public = Grader(assignment, reference=reference(), public_only=True).grade(shim, trusted=True)
    assert public.public_only and public.score == public.max_score


def test_the_template_gets_zero_and_not_implemented_everywhere(template_result):
    assert template_result.score == 0
    for p in template_result.problems:
        assert p.notes == [f"{p.name} is not implemented (it raises NotImplementedError)"], p.notes
    text = reports.text(template_result)
    assert text.count("is not implemented") == len(ALL)


def test_public_only_runs_no_hidden_case(homework, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "")
    (homework / ".secret").rename(homework / ".secret.away")
    try:
        a = load_assignment(homework)
        a.functions = a.functions[:2]
        result = Grader(a, reference=reference(), public_only=True).grade(SOLUTION)
    finally:
        (homework / ".secret.away").rename(homework / ".secret")
    assert result.public_only and result.score == result.max_score
    assert all(c.total == 3 for p in result.problems for c in p.checks if c.key == "reference")


# -- reports ------------------------------------------------------------------------------------------

def test_gradescope_results_schema(template_result, solution_result):
    for result in (template_result, solution_result[0]):
        data = reports.gradescope(result)
        assert set(data) == {"score", "execution_time", "output", "output_format", "test_output_format",
                             "test_name_format", "visibility", "stdout_visibility", "tests"}
        assert data["score"] == result.score and data["visibility"] == "visible"
        assert sum(t["max_score"] for t in data["tests"]) == pytest.approx(result.max_score, abs=0.05)
        assert sum(t["score"] for t in data["tests"]) == pytest.approx(result.score, abs=0.05)
        for t in data["tests"]:
            assert set(t) == {"name", "name_format", "number", "score", "max_score", "status", "output",
                              "output_format", "visibility"}
            assert t["status"] in ("passed", "failed") and isinstance(t["output"], str)
    detailed = json.loads(reports.render(template_result, "json"))
    assert detailed["cnnspec"]["problems"][0]["name"] == "conv2d_forward"


def test_junit_report(template_result):
    root = ET.fromstring(reports.junit(template_result))
    assert root.tag == "testsuites" and int(root.get("failures")) == 0       # not implemented: skipped
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ALL
    assert all(s.get("skipped") == s.get("tests") for s in suites)
    assert "not implemented" in suites[0].find("testcase/skipped").get("message")
    points = {p.get("name"): p.get("value") for p in suites[0].find("properties")}
    assert points["score"] == "0" and points["max_score"] == reports._fmt(template_result.problems[0].max_score)
    import dataclasses
    printed = dataclasses.replace(template_result, output="odd \ufffe\uffff\x00 \ud800 text")
    out = ET.fromstring(reports.junit(printed).encode("utf-8", "surrogatepass")).find("testsuite/system-out").text
    assert "odd ??? ? text" in out                              # XML 1.0 cannot hold them


def test_text_report_per_function(template_result, solution_result):
    text = reports.text(solution_result[0])
    assert text.splitlines()[0].startswith("CNN layers -- solution.py: 100 / 100 (public and hidden cases")
    assert "conv2d_backward" in text and "all 5 checks passed" in text


# -- the command line ---------------------------------------------------------------------------------

def test_cli_grades_and_exits_0_whatever_the_score(homework, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert cli_main(["grade", str(homework), str(homework / "layers.py"), "--public",
                     "--format", "gradescope", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["score"] == 0 and len(data["tests"]) > len(ALL)
    assert cli_main(["grade", str(homework / "assignment.toml"), str(homework / "layers.py"),
                     "--public", "--format", "junit"]) == 0
    assert capsys.readouterr().out.startswith("<?xml")


def test_cli_usage_errors(homework, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["grade", str(homework), str(SOLUTION), "--workers", "2"])
    assert info.value.code == 2
    assert "--workers applies to `cnnspec grade batch` only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["grade", "batch", str(homework), "somewhere"])
    assert "needs --out" in capsys.readouterr().err
    assert cli_main(["grade", str(homework), "no-such-file.py"]) == 1


def test_cli_init(tmp_path, capsys):
    assert cli_main(["grade", "init", str(tmp_path / "hw")]) == 0
    assert (tmp_path / "hw" / "assignment.toml").exists()
    assert cli_main(["grade", "init", str(tmp_path / "hw")]) == 1
    assert "use --force" in capsys.readouterr().err


# -- batch ------------------------------------------------------------------------------------------------

@pytest.fixture
def classroom(tmp_path, homework):
    submissions = tmp_path / "submissions"
    (submissions / "bob").mkdir(parents=True)
    (submissions / "carol").mkdir()
    (submissions / "alice.py").write_text(SOLUTION.read_text())
    (submissions / "bob" / "layers.py").write_text((homework / "layers.py").read_text())
    (submissions / "=cmd()").mkdir()
    (submissions / "=cmd()" / "mine.py").write_text(SOLUTION.read_text())
    (submissions / "dave.py").write_text("def relu_forward(x)\n    return x\n")      # a syntax error
    assignment = small_assignment(tmp_path / "a", ["relu_forward", "relu_backward", "dense_forward"])
    return assignment, submissions


def _rows(path):
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_batch_gradebook_feedback_and_resume(classroom, tmp_path):
    assignment, submissions = classroom
    out, feedback = tmp_path / "gradebook.csv", tmp_path / "feedback"
    grader = Grader(load_assignment(assignment), reference=reference())
    summary = run_batch(assignment, submissions, out, feedback=feedback, grader=grader)
    assert summary["graded"] == 4 and summary["missing"] == 1
    rows = _rows(out)
    assert list(rows) == ["'=cmd()", "alice", "bob", "carol", "dave"]        # no formula injection
    assert float(rows["dave"]["score"]) == 0 and "SyntaxError" in rows["dave"]["status"]
    assert rows["alice"]["score"] == rows["alice"]["max_score"] == "8.0"        # 2 + 2 + 4 points
    assert float(rows["bob"]["score"]) == 0 and float(rows["bob"]["relu_forward"]) == 0
    assert rows["carol"]["status"].startswith("no layers.py")
    assert float(rows["'=cmd()"]["score"]) == 8
    assert "relu_forward is not implemented" in (feedback / "bob.txt").read_text()
    assert "no layers.py in the folder" in (feedback / "carol.txt").read_text()
    again = run_batch(assignment, submissions, out, feedback=feedback, resume=True, grader=grader)
    assert again["graded"] == 0 and again["reused"] == 4
    (submissions / "bob" / "layers.py").write_text(SOLUTION.read_text())       # bob resubmits
    again = run_batch(assignment, submissions, out, feedback=feedback, resume=True, grader=grader)
    assert again["graded"] == 1 and float(_rows(out)["bob"]["score"]) == 8
    assert not list(tmp_path.glob(".gradebook.csv.*"))                           # no temporary left


def test_a_grader_failure_on_one_submission_spares_the_class(classroom, tmp_path):
    """A bug of the grader's on one submission fails that student's row (saying so), not the
    batch; resuming grades that submission again."""
    assignment, submissions = classroom
    out, feedback = tmp_path / "gradebook.csv", tmp_path / "feedback"
    grader = Grader(load_assignment(assignment), reference=reference())
    grade = grader.grade

    def failing(path, **kwargs):
        if "bob" in str(path):
            raise TypeError("a bug")
        return grade(path, **kwargs)

    grader.grade = failing
    summary = run_batch(assignment, submissions, out, feedback=feedback, grader=grader)
    assert summary["graded"] == 4
    rows = _rows(out)
    assert rows["alice"]["score"] == "8.0" and float(rows["'=cmd()"]["score"]) == 8
    assert float(rows["bob"]["score"]) == 0
    assert rows["bob"]["status"].startswith("the grader failed on this submission (TypeError: a bug)")
    assert "the grader failed on this submission" in (feedback / "bob.txt").read_text()
    grader.grade = grade
    again = run_batch(assignment, submissions, out, feedback=feedback, resume=True, grader=grader)
    assert again["graded"] == 1 and _rows(out)["bob"]["status"] == "graded"


def test_a_file_saved_with_a_byte_order_mark_is_graded(tmp_path):
    """Windows editors start UTF-8 files with a BOM, which Python itself reads: so does the grader."""
    assignment = small_assignment(tmp_path / "a", ["relu_forward", "dense_forward"])
    path = tmp_path / "bom.py"
    path.write_bytes(b"\xef\xbb\xbf" + SOLUTION.read_bytes())
    result = Grader(load_assignment(assignment), reference=reference()).grade(path)
    assert result.import_error is None and result.score == result.max_score, reports.text(result)


def test_batch_resumes_after_an_interruption(classroom, tmp_path):
    assignment, submissions = classroom
    out = tmp_path / "gradebook.csv"
    grader = Grader(load_assignment(assignment), reference=reference())
    calls = []

    def interrupt(student, result):
        calls.append(student)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(assignment, submissions, out, progress=interrupt, grader=grader)
    assert not out.exists() and len(list((tmp_path / "gradebook.csv.d").glob("*.json"))) == 3
    summary = run_batch(assignment, submissions, out, resume=True, grader=grader)
    assert summary["graded"] == 2 and len(_rows(out)) == 5


def test_batch_with_worker_processes(classroom, tmp_path, capsys):
    assignment, submissions = classroom
    out = tmp_path / "gradebook.csv"
    assert cli_main(["grade", "batch", str(assignment), str(submissions), "--out", str(out),
                     "--workers", "2", "--feedback", str(tmp_path / "feedback")]) == 0
    assert "graded 4, reused 0, missing 1 of 5 students" in capsys.readouterr().out
    rows = _rows(out)
    assert float(rows["alice"]["score"]) == 8 and float(rows["bob"]["score"]) == 0
    assert len(list((tmp_path / "feedback").glob("*.txt"))) == 5


def test_resume_regrades_when_anything_that_decides_a_score_changed(classroom, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import cnnspec
    from cnnspec.grade import batch

    assignment_path, submissions = classroom
    shutil.copy(Path(__file__).resolve().parent.parent / "specs" / "lenet5.cnn", assignment_path.parent)
    with open(assignment_path, "a") as f:
        f.write('\n[[networks]]\nname = "net"\nspec = "lenet5.cnn"\n')
    a = load_assignment(assignment_path)
    key = batch.grading_key(a, False)
    assert batch.grading_key(a, False) == key and batch.grading_key(a, True) != key
    (assignment_path.parent / ".secret").write_text("another secret\n")
    assert batch.grading_key(a, False) != key                       # the hidden cases changed
    assert batch.grading_key(a, True) == batch.grading_key(a, True)
    key = batch.grading_key(a, False)
    spec = assignment_path.parent / "lenet5.cnn"
    spec.write_text(spec.read_text().replace("dense(84)", "dense(80)"))
    assert batch.grading_key(a, False) != key                       # a network file changed
    key = batch.grading_key(a, False)
    monkeypatch.setattr(cnnspec, "__version__", "99.0")
    assert batch.grading_key(a, False) != key                       # another cnnspec
    key = batch.grading_key(a, False)
    monkeypatch.setattr(batch, "code_digest", lambda: "another grader")
    assert batch.grading_key(a, False) != key                       # the grader's own code changed

    # and run_batch uses it: a changed secret regrades everyone
    out = tmp_path / "gradebook.csv"
    small = load_assignment(small_assignment(tmp_path / "small", ["relu_forward"]))
    grader = Grader(small, reference=reference())
    first = run_batch(small.path, submissions, out, grader=grader)
    assert run_batch(small.path, submissions, out, resume=True, grader=grader)["graded"] == 0
    (small.directory / ".secret").write_text("changed\n")
    assert run_batch(small.path, submissions, out, resume=True, grader=grader)["graded"] == first["graded"]


def test_feedback_file_names_are_safe_and_one_per_student():
    from cnnspec.grade.batch import safe_name

    names = ["alice", "a b", "a?b", "a_b", "Zoë", "Zoé", "../../etc/passwd", ".hidden", "x" * 300, ""]
    files = [safe_name(n) for n in names]
    assert len(set(files)) == len(names)
    assert files[0] == "alice" and files[3] == "a_b" and files[4] == "Zoë"
    assert all("/" not in f and not f.startswith(".") and 0 < len(f) < 100 for f in files)


def test_csv_cells_cannot_be_formulas():
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("@x") == "'@x" and csv_cell("alice") == "alice"


# -- Gradescope --------------------------------------------------------------------------------------------

def test_gradescope_bundle(homework, tmp_path):
    (homework / "lenet5.cnn").touch()
    wheel = tmp_path / "cnnspec-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel")
    out = tmp_path / "autograder.zip"
    names = make_bundle(homework, out, wheel=wheel)
    with zipfile.ZipFile(out) as z:
        assert set(z.namelist()) == set(names) == {"setup.sh", "run_autograder", "assignment.toml",
                                                   ".secret", wheel.name}
        run = z.read("run_autograder").decode()
        assert "/autograder/results/results.json" in run and "--format gradescope" in run
        assert z.getinfo("run_autograder").external_attr >> 16 == 0o755
        setup = z.read("setup.sh").decode()
        assert f"pip install /autograder/source/{wheel.name}" in setup
        assert "sys.version_info >= (3, 10)" in setup           # Ubuntu 22.04's Python 3.10 will do
    make_bundle(homework, out)                             # a wheel built from this checkout
    with zipfile.ZipFile(out) as z:
        [built] = [n for n in z.namelist() if n.endswith(".whl")]
        with zipfile.ZipFile(io.BytesIO(z.read(built))) as w:
            assert {"cnnspec/grade/child.py", "cnnspec/api.py", "cnnspec/grammar/cnn.lark"} <= set(w.namelist())
    make_bundle(homework, out, pypi=True)
    with zipfile.ZipFile(out) as z:
        setup = z.read("setup.sh").decode()
        assert "pip install cnnspec==" in setup and "warm_up('/autograder/source/assignment.toml')" in setup
        assert wheel.name not in z.namelist()


def test_warm_up_runs_the_reference_on_every_case(tmp_path, monkeypatch):
    from cnnspec.grade import grader

    assignment = small_assignment(tmp_path, ["relu_forward", "conv2d_backward"])
    (tmp_path / ".secret").unlink()                      # Gradescope's image is built without it
    made = []
    real = grader.Grader.cases
    monkeypatch.setattr(grader.Grader, "cases", lambda self, problem: made.append(
        (problem.name, real(self, problem))) or made[-1][1])
    warm_up(assignment)
    assert [name for name, _ in made] == ["relu_forward", "conv2d_backward"]
    for _, cases in made:                                # each public case ran the reference
        assert cases and all(case.visibility == "public" and outputs for case, outputs in cases)


def test_an_upload_zipped_with_its_folder_is_graded(homework, tmp_path):
    """Gradescope unpacks a zip of the student's folder as it is: hw1/layers.py beside the
    student's own hw1/test_layers.py. The one file named layers.py is the submission (graded as
    the reference solution it is); two of that name are refused by name, not "rename it"."""
    folder = tmp_path / "submission"
    (folder / "hw1").mkdir(parents=True)
    (folder / "hw1" / "layers.py").write_text(SOLUTION.read_text())
    (folder / "hw1" / "test_layers.py").write_text("import layers\n")
    (folder / "README.txt").write_text("my homework")
    assert find_submission(folder, "layers.py").path == folder / "hw1" / "layers.py"
    out = tmp_path / "results.json"
    assert cli_main(["grade", str(homework), str(folder), "--public", "--format", "gradescope", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["score"] == sum(t["max_score"] for t in data["tests"]) > 0, data["output"]
    (folder / "old").mkdir()
    (folder / "old" / "layers.py").write_text("x = 1\n")
    entry = find_submission(folder, "layers.py")
    assert entry.path is None and "2 files named layers.py in the folder (hw1/layers.py, old/layers.py)" in entry.why


def test_a_submission_that_links_to_the_secret_reads_nothing_of_it(tmp_path, capsys):
    """A zip keeps symbolic links: layers.py -> the assignment's .secret was read by the grader
    itself (as root on Gradescope) and run as the submission, and the report said "NameError:
    name '<the secret>' is not defined": the hidden cases' seed in the student's hands. A link is
    refused by name, in a folder, behind a linked sub-folder or handed in alone."""
    assignment = small_assignment(tmp_path / "a", ["relu_forward"])
    secret = tmp_path / "a" / ".secret"
    secret.write_text("deadbeef5f3a9c0d11e2b7a4c6f8e0d2a1b3c5d7e9f1a2b4\n")
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "layers.py").symlink_to(secret)
    (tmp_path / "sub2" / "hw1").mkdir(parents=True)
    (tmp_path / "sub2" / "hw1" / "layers.py").write_text(SOLUTION.read_text())
    (tmp_path / "sub3").mkdir()
    (tmp_path / "sub3" / "hw1").symlink_to(tmp_path / "a", target_is_directory=True)
    for target in (folder, folder / "layers.py"):
        out = tmp_path / "results.json"
        assert cli_main(["grade", str(assignment), str(target), "--format", "gradescope", "-o", str(out)]) == 0
        text = out.read_text()
        assert "deadbeef" not in text and "is a symbolic link" in text, text
        assert json.loads(text)["score"] == 0
    grader = Grader(load_assignment(assignment), reference=reference())
    linked = reports.text(grader.grade(tmp_path / "sub3"))
    assert "deadbeef" not in linked and "0 / " in linked.splitlines()[0], linked
    result = grader.grade(tmp_path / "sub2")
    assert result.score == result.max_score, reports.text(result)      # a plain sub-folder is fine


def test_a_design_that_links_to_a_file_reads_nothing_of_it(tmp_path):
    """The same through a design problem: design.cnn -> any file the grader can read was parsed
    and its first line shown under the located error, whatever that line holds."""
    assignment = small_assignment(tmp_path / "a", [], extra=(
        '[[designs]]\nname = "small_cnn"\ninput = "1x16x16"\ndata = "shapes:n=200"\nepochs = 1\n'))
    private = tmp_path / "private.txt"
    private.write_text("0123abcdef private line\n")
    for name, target in (("folder", tmp_path / "s1"), ("file", tmp_path / "s2")):
        target.mkdir()
        (target / "design.cnn").symlink_to(private)
        graded = target if name == "folder" else target / "design.cnn"
        text = reports.text(Grader(load_assignment(assignment), reference=reference()).grade(graded))
        assert "private line" not in text and "is a symbolic link" in text, text


def test_a_linked_layer_file_loses_nothing_else(tmp_path):
    """The link is refused, not read; the design handed in beside it is graded as ever."""
    assignment = small_assignment(tmp_path / "a", ["relu_forward"], extra=(
        '[[designs]]\nname = "small_cnn"\ninput = "1x16x16"\ndata = "shapes:n=200"\nepochs = 1\n'))
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "layers.py").symlink_to(tmp_path / "a" / ".secret")
    (folder / "design.cnn").write_text("network N {\n    input x: 1x16x16\n    flatten -> dense(3)\n}\n")
    result = Grader(load_assignment(assignment), reference=reference()).grade(folder)
    text = reports.text(result)
    assert "a test secret" not in text and "is a symbolic link" in text, text
    assert result.problem("relu_forward").score == 0
    design = result.problem("small_cnn")
    assert design.checks and design.checks[0].ok and "not graded" not in text.split("small_cnn")[1][:200], text


def test_a_submission_without_the_expected_file_is_told_which_and_what_was_found(homework, tmp_path, capsys):
    """Gradescope puts whatever the student uploaded in /autograder/submission."""
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "layers (1).ipynb").write_text("{}")
    (folder / "notes.txt").write_text("hi")
    (folder / "a.py").write_text("x = 1\n")
    (folder / "b.py").write_text("y = 2\n")
    out = tmp_path / "results.json"
    assert cli_main(["grade", str(homework), str(folder), "--format", "gradescope", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["score"] == 0 and data["tests"] and all(t["score"] == 0 for t in data["tests"])
    assert "expected layers.py; found a.py, b.py, layers (1).ipynb, notes.txt" in data["output"]
    assert "3 Python files and notebooks: rename the one to grade to layers.py (or layers.ipynb)" in data["output"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["grade", str(homework), str(empty), "--public"]) == 0
    assert "expected layers.py; found no files" in capsys.readouterr().out


def test_students_can_run_public_from_the_student_bundle_alone(tmp_path, capsys):
    """`grade student-bundle` holds exactly what --public needs: unpacked in a fresh folder, with
    no secret anywhere, the public cases and the network problem run."""
    import os
    import subprocess
    import sys

    hw = tmp_path / "hw"
    init_assignment(hw)
    assert cli_main(["grade", "student-bundle", str(hw / "assignment.toml"), "-o", str(tmp_path / "s.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        names = set(z.namelist())
        assert names == {"assignment.toml", "layers.py", "lenet5.cnn", "README.txt"}
        assert all(b"a test secret" not in z.read(n) and (hw / ".secret").read_bytes().strip() not in z.read(n)
                   for n in names)
        home = tmp_path / "student"
        z.extractall(home)
    (home / "layers.py").write_text(SOLUTION.read_text())
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    done = subprocess.run([sys.executable, "-m", "cnnspec", "grade", "assignment.toml", "layers.py", "--public"],
                          cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "120 / 120 (public cases only" in done.stdout and "lenet5" in done.stdout, done.stdout
    assert cli_main(["grade", "student-bundle", str(hw), "-o", str(tmp_path / "folder")]) == 0
    assert {p.name for p in (tmp_path / "folder").iterdir()} == names


def test_a_value_off_by_float32_rounding_is_shown_in_digits_that_differ_and_named():
    """A float64 result that went through float32 (relative error ~1e-7) printed identical
    values at 6 digits; it is shown to the digits that tell the two apart, with the likely
    cause. A real mistake (1%) is shown at 6 digits, without that hint."""
    from cnnspec.grade.checks import value_problem

    expected = np.array([[0.2050241234567, -1.5], [0.75, 2.0]])
    got = expected.astype(np.float32).astype(np.float64) * (1 + 3e-7)
    message = value_problem("out", got, expected, 1e-7, True)
    assert "got 0.205024185, expected 0.205024123" in message, message
    assert "float32's precision" in message
    message = value_problem("out", expected * 1.01, expected, 1e-7, True)
    assert "got 0.207074, expected 0.205024" in message and "float32" not in message, message
