"""Design problems ([[designs]]): a .cnn file checked against requirements and budgets, trained by
the grader in a sandboxed process, scored on held-out data; the file is data and cannot reach
outside its folder."""
from __future__ import annotations

import json
import os
import pwd
import time

import numpy as np
import pytest

from cnnspec.cli import main as cli_main
from cnnspec.errors import CnnSpecError
from cnnspec.grade import reports
from cnnspec.grade.assignment import load_assignment
from cnnspec.grade.batch import run_batch
from cnnspec.grade.design import estimate_seconds, machine_rate, read_design
from cnnspec.grade.grader import Grader

ASSIGNMENT = """
[assignment]
name = "design a CNN"
public_seed = 5

[[designs]]
name = "small_cnn"
input = "1x16x16"
layers = ["conv", "relu", "maxpool", "flatten", "dense", "softmax", "dropout"]
max_params = 20000
max_macs = 300000
max_memory_mb = 8
receptive_field_layer = "features"
receptive_field_min = 8
data = "shapes:n=1000"
test_split = 0.25
epochs = 3
batch = 32
optimizer = "adam(lr=0.003)"
time_limit = 60
student_train = ["epochs"]
max_epochs = 4
thresholds = [[0.3, 0.25], [0.45, 0.5], [0.55, 0.75], [0.6, 1.0]]
{extra}
"""

LEARNS = """# within budget, and it learns
network Small {
    input image: 1x16x16
    conv(8, 3x3, pad=1) -> relu -> maxpool(2)
    features = conv(16, 3x3, pad=1)
    relu -> maxpool(2)
    flatten -> dense(32) -> relu -> dense(10) -> softmax
}
train {
    epochs = 50                 # bounded by the assignment's max_epochs
    data = "/etc/passwd"        # never read: the grader's data is the assignment's
    seed = 1
}
"""

OVER_BUDGET = """network Big {
    input image: 1x16x16
    features = conv(32, 3x3, pad=1)
    relu -> maxpool(2)
    flatten -> dense(64) -> relu -> dense(10) -> softmax
}
"""

BROKEN = """network Broken {
    input image: 1x16x16
    conv(8, 3x3) -> relu -> maxpol(2)
    flatten -> dense(10) -> softmax
}
"""


def make(tmp, extra: str = "", **files):
    directory = tmp / "hw"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "assignment.toml").write_text(ASSIGNMENT.replace("{extra}", extra))
    (directory / ".secret").write_text("design secret\n")
    paths = {}
    for name, text in files.items():
        paths[name] = tmp / f"{name}.cnn"
        paths[name].write_text(text)
    return directory, paths


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("design")
    directory, paths = make(tmp, learns=LEARNS, over=OVER_BUDGET, broken=BROKEN)
    grader = Grader(load_assignment(directory))
    return {name: grader.grade(path) for name, path in paths.items()}, grader, paths


def scores(result):
    problem = result.problems[0]
    return {c.key: (score, top) for c, (score, top) in zip(problem.checks, problem.cents())}


def test_a_design_within_budget_that_learns_gets_its_points(graded):
    results, _, _ = graded
    result = results["learns"]
    problem = result.problems[0]
    text = reports.text(result)
    assert all(c.ok for c in problem.checks), text
    assert result.score == result.max_score == 30
    assert problem.details["accuracy"] >= 0.6 and problem.details["epochs"] == 4      # bounded to 4
    assert "held-out accuracy" in text and "(your 50 is above the bound 4)" in text
    assert "`data`, `seed` are ignored" in text
    assert "parameters: 9,802 (budget 20,000)" in text     # 8*9+8 + 16*72+16 + 256*32+32 + 330


def test_a_design_over_the_parameter_budget_is_not_trained(graded):
    results, _, _ = graded
    result = results["over"]
    s = scores(result)
    assert s["params"][0] == 0 and s["accuracy"][0] == 0
    assert s["receptive_field"][0] == 0            # `features` is its first conv: a 3x3 field
    assert all(score == top for key, (score, top) in s.items() if key not in ("params", "accuracy", "receptive_field"))
    text = reports.text(result)
    assert "the receptive field of `features` is 3x3; the assignment asks for at least 8" in text
    assert "132,106 parameters: over the budget of 20,000 by 112,106" in text
    assert "not trained: it is over the parameters budget" in text
    assert "accuracy" not in result.problems[0].details


def test_a_design_that_does_not_compile_scores_zero_with_a_located_error(graded):
    results, _, _ = graded
    result = results["broken"]
    assert result.score == 0
    text = reports.text(result)
    assert "broken.cnn:3:29: error: unknown layer or block `maxpol`" in text
    assert "                                         ^~~~~~" in text and "did you mean `maxpool`?" in text
    assert "not checked: your network does not compile" in text
    assert "Traceback" not in text and str(graded[2]["broken"].parent) not in text


def test_grading_is_deterministic_and_the_hidden_seed_decides(graded, tmp_path):
    results, grader, paths = graded
    again = grader.grade(paths["learns"])
    assert again.problems[0].details["accuracy"] == results["learns"].problems[0].details["accuracy"]
    public = Grader(load_assignment(grader.assignment.path), public_only=True)
    assert public.design_data(grader.assignment.designs[0]).y_test.tolist() != \
        grader.design_data(grader.assignment.designs[0]).y_test.tolist()


def test_training_runs_as_the_sandbox_user_when_the_grader_is_root(graded):
    results, _, _ = graded
    uid = results["learns"].problems[0].details["uid"]
    expected = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert uid == expected


def test_a_network_too_slow_for_the_time_limit_is_reported_from_the_estimate(tmp_path):
    wide = LEARNS.replace("conv(8, 3x3, pad=1)", "conv(64, 3x3, pad=1)").replace(
        "conv(16, 3x3, pad=1)", "conv(64, 3x3, pad=1)")
    directory, paths = make(tmp_path, extra="weights = {params = 0, macs = 0, memory = 0}", wide=wide)
    text = (directory / "assignment.toml").read_text()
    text = text.replace("max_params = 20000", "max_params = 2000000").replace("max_macs = 300000", "max_macs = 0")
    text = text.replace("max_memory_mb = 8", "").replace("time_limit = 60", "time_limit = 0.2")
    (directory / "assignment.toml").write_text(text)
    started = time.monotonic()
    result = Grader(load_assignment(directory)).grade(paths["wide"])
    assert time.monotonic() - started < 30                          # nothing was trained
    message = reports.text(result)
    assert "not trained: training would take about" in message and "over the time limit of 0.2 s" in message


def test_a_network_needing_more_memory_than_the_limit_is_not_started(tmp_path):
    directory, paths = make(tmp_path, learns=LEARNS)
    text = (directory / "assignment.toml").read_text().replace("time_limit = 60", "time_limit = 60\nmemory_mb = 100")
    (directory / "assignment.toml").write_text(text)
    result = Grader(load_assignment(directory)).grade(paths["learns"])
    assert "not trained: training would need about" in reports.text(result)
    assert "over the limit of 100 MiB" in reports.text(result)


def test_the_time_estimate_follows_the_measured_rate():
    import cnnspec

    rate = machine_rate()
    small = cnnspec.loads(LEARNS)
    big = cnnspec.loads(LEARNS.replace("conv(16, 3x3, pad=1)", "conv(64, 3x3, pad=1)"))
    assert 0 < estimate_seconds(small, 1000, 3, 32, rate) < estimate_seconds(big, 1000, 3, 32, rate)
    assert estimate_seconds(small, 2000, 3, 32, rate) == pytest.approx(2 * estimate_seconds(small, 1000, 3, 32, rate),
                                                                    rel=0.05)


BLOCK_DESIGNS = {
    "block": """block stage(c) {
    conv(c, 3x3, pad=1) -> relu -> maxpool(2)
}
network Mine {
    input pic: 1x16x16
    stage(8)
    features = stage(16)
    flatten -> dense(128) -> relu -> dense(10) -> softmax
}
""",
    "chain": """network Mine {
    input pic: 1x16x16
    conv(8, 3x3, pad=1) -> relu -> maxpool(2)
    features = conv(16, 3x3, pad=1) -> relu -> maxpool(2)
    flatten -> dense(128) -> relu -> dense(10) -> softmax
}
""",
}


@pytest.mark.parametrize("kind", sorted(BLOCK_DESIGNS))
def test_the_receptive_field_is_checked_where_a_block_or_chain_binds_the_name(tmp_path, kind):
    """`features = stage(16)` (a block) and `features = conv(...) -> relu -> maxpool(2)` (a chain)
    bind `features` to their output, as dsl.md says: its field is checked (both were "your network
    has no layer named `features`"). The reference: the support of the input gradient of a centre
    unit of that output in PyTorch (weights 1, pooling averaged), 10x10 here."""
    torch = pytest.importorskip("torch")
    x = torch.zeros(1, 1, 16, 16, requires_grad=True)
    h = x
    for _ in range(2):
        conv = torch.nn.Conv2d(h.shape[1], 1, 3, padding=1)
        torch.nn.init.constant_(conv.weight, 1.0)
        h = torch.nn.AvgPool2d(2)(conv(h))
    (grad,) = torch.autograd.grad(h[0, 0, 2, 2], x)
    rows = np.flatnonzero(grad[0, 0].numpy().any(1))
    field = int(rows[-1] - rows[0] + 1)
    assert field == 10
    directory, paths = make(tmp_path, design=BLOCK_DESIGNS[kind])
    result = Grader(load_assignment(directory)).grade(paths["design"])    # over the parameter budget: not trained
    s = scores(result)
    text = reports.text(result)
    assert s["receptive_field"][0] == s["receptive_field"][1] > 0, text
    assert f"receptive field of `features`: {field}x{field} (at least 8)" in text
    assert s["params"][0] == 0 and "not trained: it is over the parameters budget" in text



def test_a_file_whose_first_network_is_not_the_design_says_which_network_was_graded(tmp_path):
    """A helper network written before the design: the first network is graded (README, several
    networks), and the shapes' message says so by name; it said only "your input is 1x8x8"."""
    helper = "network Tiny {\n    input pic: 1x8x8\n    flatten -> dense(10)\n}\n"
    directory, paths = make(tmp_path, design=helper + LEARNS.split("train {")[0])
    result = Grader(load_assignment(directory)).grade(paths["design"])
    text = " ".join(reports.text(result).split())
    assert "your input is 1x8x8" in text
    assert "your file holds 2 networks (Tiny, Small): the first, `Tiny`, is the one graded" in text, text


# -- a .cnn file is data ---------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ('import "/etc/passwd"', "`import` is not allowed in a design submission"),
    ('import "../hw/.secret"', "`import` is not allowed in a design submission"),
])
def test_imports_are_refused_in_a_loose_file(tmp_path, line, message):
    path = tmp_path / "net.cnn"
    path.write_text(f"{line}\n{OVER_BUDGET}")
    with pytest.raises(CnnSpecError) as err:
        read_design(path, "net.cnn")
    assert message in str(err.value) and "net.cnn:1:8" in str(err.value)


def test_imports_are_confined_to_the_students_folder(tmp_path):
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "blocks.cnn").write_text("block stage(c) {\n    conv(c, 3x3, pad=1) -> relu -> maxpool(2)\n}\n")
    (tmp_path / "outside.cnn").write_text("block other(c) {\n    conv(c, 3x3)\n}\n")
    inside = folder / "design.cnn"
    inside.write_text('import "blocks.cnn"\nnetwork N {\n    input image: 1x16x16\n    stage(8) -> stage(8)\n'
                      '    flatten -> dense(10) -> softmax\n}\n')
    assert read_design(inside, "design.cnn", root=folder).output_shape == (10,)
    inside.write_text('import "../outside.cnn"\nnetwork N {\n    input image: 1x16x16\n    other(4)\n}\n')
    with pytest.raises(CnnSpecError) as err:
        read_design(inside, "design.cnn", root=folder)
    assert "is outside the folder" in str(err.value) and str(tmp_path) not in str(err.value)
    inside.write_text('import "/etc/passwd"\nnetwork N {\n    input image: 1x16x16\n}\n')
    with pytest.raises(CnnSpecError, match="outside the folder"):
        read_design(inside, "design.cnn", root=folder)


def test_files_that_are_not_regular_or_too_large_are_refused(tmp_path):
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    with pytest.raises(CnnSpecError, match="not a regular file"):
        read_design(fifo, "pipe.cnn")
    huge = tmp_path / "huge.cnn"
    huge.write_text("# " + "x" * (2 << 20) + "\n" + OVER_BUDGET)
    with pytest.raises(CnnSpecError, match="larger than 1 MiB"):
        read_design(huge, "huge.cnn")
    with pytest.raises(CnnSpecError, match="no such file"):
        read_design(tmp_path / "missing.cnn", "missing.cnn")


def test_a_folder_submission_and_the_batch_gradebook(graded, tmp_path):
    _, grader, paths = graded
    submissions = tmp_path / "submissions"
    for student, name in (("ana", "learns"), ("ben", "over"), ("cy", "broken")):
        (submissions / student).mkdir(parents=True)
        (submissions / student / "design.cnn").write_text(paths[name].read_text())
    # ana's network imports a block from her own folder: it travels with her file to the training
    block = "block stage(c) {\n    conv(c, 3x3, pad=1) -> relu -> maxpool(2)\n}\n"
    (submissions / "ana" / "blocks.cnn").write_text(block)
    design = LEARNS.replace("conv(8, 3x3, pad=1) -> relu -> maxpool(2)", "stage(8)")
    design = design.replace("network Small", 'import "blocks.cnn"\nnetwork Small')
    (submissions / "ana" / "design.cnn").write_text(design)
    (submissions / "dee").mkdir()
    (submissions / "dee" / "notes.txt").write_text("forgot")
    out = tmp_path / "book.csv"
    run_batch(grader.assignment.path, submissions, out, grader=grader)
    rows = {line.split(",")[0]: line.split(",") for line in out.read_text().splitlines()}
    assert rows["student"][:4] == ["student", "score", "max_score", "small_cnn"]
    assert float(rows["ana"][1]) == 30 and 0 < float(rows["ben"][1]) < 30 and float(rows["cy"][1]) == 0
    assert float(rows["dee"][1]) == 0 and "no design.cnn in the folder" in ",".join(rows["dee"])


def test_cli_grades_a_design_in_every_format(graded, capsys, tmp_path):
    _, grader, paths = graded
    for fmt in ("text", "gradescope", "prairielearn", "junit"):
        assert cli_main(["grade", str(grader.assignment.path), str(paths["over"]), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "over the budget of 20,000" in out
    path = tmp_path / "r.json"
    cli_main(["grade", str(grader.assignment.path), str(paths["over"]), "--format", "prairielearn", "-o", str(path)])
    data = json.loads(path.read_text())
    assert data["gradable"] and 0 < data["score"] < 1


@pytest.mark.parametrize("key, value, message", [
    ("input", '"1x16"', None),
    ("input", '"16 by 16"', "must be a shape"),
    ("layers", '["conv", "maxpol"]', "unknown layer kind `maxpol`"),
    ("metric", '"miou"', '`metric` of task = classify is "accuracy"'),
    ("thresholds", "[[0.5, 2]]", "`thresholds` is a list of [metric, credit] pairs"),
    ("optimizer", '"adamm(lr=1)"', "unknown optimizer"),
    ("student_train", '["data"]', "`student_train` lists settings"),
    ("weights", "{accuracy = 1, speed = 2}", "unknown check `speed`"),
])
def test_a_bad_design_table_is_a_located_error(tmp_path, key, value, message):
    directory, _ = make(tmp_path)
    text = (directory / "assignment.toml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
    lines.insert(lines.index('name = "small_cnn"') + 1, f"{key} = {value}")
    (directory / "assignment.toml").write_text("\n".join(lines) + "\n")
    if message is None:
        load_assignment(directory)
        return
    with pytest.raises(CnnSpecError) as err:
        load_assignment(directory)
    assert message in str(err.value) and "assignment.toml:" in str(err.value)


TASK_ASSIGNMENT = """
[assignment]
name = "design for a task"
public_seed = 5

[[designs]]
name = "task_design"
input = "1x12x12"
data = "shapes:plus,x,square,n=120"
test_split = 0.25
epochs = 2
batch = 16
optimizer = "adam(lr=0.01)"
time_limit = 60
{extra}
"""

SEGMENTER = """network Seg {
    input image: 1x12x12
    conv(8, 3x3, pad=1) -> relu
    conv(4, 1x1) -> softmax
}
"""

DENOISER = """network Den {
    input image: 1x12x12
    conv(8, 3x3, pad=1) -> relu
    conv(1, 3x3, pad=1) -> sigmoid
}
"""


@pytest.mark.parametrize("task, extra, submission", [
    ("segment", 'task = "segment"\noutput = "4x12x12"\nthresholds = [[0.1, 0.5], [0.99, 1.0]]', SEGMENTER),
    ("reconstruct", 'task = "reconstruct"\ncorrupt = ["noise(0.2)"]\nthresholds = [[5, 0.5], [60, 1.0]]',
     DENOISER)])
def test_a_design_for_a_task_is_scored_by_its_metric(tmp_path, monkeypatch, task, extra, submission):
    """Segmentation designs score the held-out mean IoU, reconstructions the PSNR, each measured by
    the grader itself: the figures equal what the NumPy references give for the trained arrays."""
    from cnnspec.grade import design
    from cnnspec.train.metrics import corrupted_held_out

    scored = []
    real_score = design._score
    monkeypatch.setattr(design, "_score", lambda problem, model, data, config: (
        scored.append((model, data, config)) or real_score(problem, model, data, config)))
    directory = tmp_path / "hw"
    directory.mkdir()
    (directory / "assignment.toml").write_text(TASK_ASSIGNMENT.replace("{extra}", extra))
    (directory / ".secret").write_text("task secret\n")
    path = tmp_path / "design.cnn"
    path.write_text(submission)
    grader = Grader(load_assignment(directory))
    result = grader.grade(path)
    problem = result.problems[0]
    text = reports.text(result)
    value = problem.details["accuracy"]
    data = grader.design_data(grader.assignment.designs[0])
    if task == "segment":
        assert data.y_test.shape[1:] == (12, 12) and "held-out mean IoU" in text
        assert 0.1 <= value < 0.99 and problem.cents()[-1][0] == problem.cents()[-1][1] / 2, text
    else:
        assert "held-out PSNR" in text and "their corrupted inputs" in text
        assert 5 <= value < 60, text
    assert all(c.ok for c in problem.checks[:2]), text
    # the NumPy references, from the trained model the grader scored
    (model, data, config), = scored
    if task == "segment":
        predicted = model.forward(data.x_test).argmax(axis=1)
        ious = [np.sum((predicted == c) & (data.y_test == c)) / np.sum((predicted == c) | (data.y_test == c))
                for c in range(4) if np.any((predicted == c) | (data.y_test == c))]
        assert value == pytest.approx(np.mean(ious), rel=1e-12)
    else:
        fed = corrupted_held_out(config.corrupt, data.x_test, config.seed)
        assert np.mean((fed - data.x_test) ** 2) > 0.01          # the inputs were spoilt
        mse = np.mean((model.forward(fed).astype(np.float64) - data.x_test) ** 2)
        assert value == pytest.approx(10 * np.log10(1 / mse), rel=1e-9)


@pytest.mark.parametrize("extra, message", [
    ('task = "segment"', "a segmentation design needs `output`"),
    ('task = "detect"', "`task` in [designs] is one of classify, segment, reconstruct"),
    ('task = "segment"\noutput = "4x12x12"\nmetric = "psnr"', '`metric` of task = segment is "miou"'),
    ('corrupt = ["noise(0.2)"]', "`corrupt` spoils a reconstruction's input"),
    ('task = "reconstruct"\ncorrupt = ["blur(2)"]', "`corrupt` in [designs]"),
])
def test_bad_task_settings_are_located_errors(tmp_path, extra, message):
    directory = tmp_path / "hw"
    directory.mkdir()
    (directory / "assignment.toml").write_text(TASK_ASSIGNMENT.replace("{extra}", extra))
    with pytest.raises(CnnSpecError) as err:
        load_assignment(directory)
    assert message in str(err.value) and "assignment.toml:" in str(err.value)
