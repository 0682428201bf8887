"""Analysis exercises: a different, correct answer key per student (checked against PyTorch for
shapes, parameters and MACs, and against input gradients for receptive fields), answers graded
with the formula and the student's numbers, Moodle XML valid against the documented format."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cnnspec.cli import main as cli_main
from cnnspec.errors import CnnSpecError
from cnnspec.grade.exercise import check_files, make_exercise, read_template

SCHEMAS = Path(__file__).resolve().parent / "schemas"

TEMPLATE = """# exercise: Shapes, parameters and receptive fields
# vary size in 28..44 step 4          the input's height and width
# vary k1 in {3, 5}
# vary c1 in 4..16 step 2
# vary s1 in 1..2
# vary p1 in 0..2
# vary c2 in 8..32 step 8
# vary k2 in {3, 5}
# ask shape, params, macs, activations of conv1, maxpool1, conv2
# ask receptive_field of conv1, conv2
# ask total params, macs, activations
network Exercise {
    input image: 3x{size}x{size}
    conv({c1}, {k1}x{k1}, stride={s1}, pad={p1}) -> relu -> maxpool(2)
    conv({c2}, {k2}x{k2}, pad=1) -> relu
    flatten -> dense(10) -> softmax
}
"""


@pytest.fixture(scope="module")
def exercise(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exercise")
    (tmp / "template.cnn").write_text(TEMPLATE)
    (tmp / "roster.csv").write_text("id,name\n" + "".join(f"s{i:02d},Student {i}\n" for i in range(30)))
    key = make_exercise(tmp / "template.cnn", tmp / "roster.csv", tmp / "out", seed=7, moodle=tmp / "moodle.xml")
    return tmp, key


def torch_layers(text: str):
    """The variant built layer by layer in PyTorch, independently of cnnspec's analysis: each
    layer's output shape, its parameters (numel) and its MACs from the tensors' shapes."""
    torch = pytest.importorskip("torch")
    import re

    size = int(re.search(r"input image: 3x(\d+)x\1", text).group(1))
    conv_args = re.findall(r"conv\((\d+), (\d)x\d(?:, stride=(\d))?, pad=(\d)\)", text)
    x = torch.zeros(1, 3, size, size)
    out = {}
    for i, (filters, k, stride, pad) in enumerate(conv_args, 1):
        conv = torch.nn.Conv2d(x.shape[1], int(filters), int(k), stride=int(stride or 1), padding=int(pad))
        y = conv(x)
        out[f"conv{i}"] = (tuple(y.shape[1:]), sum(p.numel() for p in conv.parameters()),
                           y.numel() * x.shape[1] * int(k) ** 2, y.numel())
        x = torch.relu(y)
        if i == 1:
            x = torch.nn.MaxPool2d(2)(x)
            out["maxpool1"] = (tuple(x.shape[1:]), 0, 0, x.numel())
    dense = torch.nn.Linear(x.numel(), 10)
    out["dense1"] = ((10,), sum(p.numel() for p in dense.parameters()), x.numel() * 10, 10)
    return out


def field_by_gradient(text: str, layer: str):
    """The receptive field of ``layer`` measured as the support of the input gradient of its
    centre unit (all weights positive, pooling averaged: every input in the field counts),
    per axis; None when the field reaches the border (clipped there)."""
    torch = pytest.importorskip("torch")
    import re

    size = int(re.search(r"input image: 3x(\d+)x\1", text).group(1))
    conv_args = re.findall(r"conv\((\d+), (\d)x\d(?:, stride=(\d))?, pad=(\d)\)", text)
    x = torch.zeros(1, 3, size, size, requires_grad=True)
    h = x
    for i, (filters, k, stride, pad) in enumerate(conv_args, 1):
        conv = torch.nn.Conv2d(h.shape[1], int(filters), int(k), stride=int(stride or 1), padding=int(pad))
        torch.nn.init.constant_(conv.weight, 1.0)
        h = conv(h)
        if layer == f"conv{i}":
            break
        if i == 1:
            h = torch.nn.AvgPool2d(2)(h)
            if layer == "maxpool1":
                break
    unit = h[0, 0, h.shape[2] // 2, h.shape[3] // 2]
    (grad,) = torch.autograd.grad(unit, x)
    support = grad[0].abs().sum(0).numpy() > 0
    rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == size - 1 or cols[-1] == size - 1:
        return None
    return f"{rows[-1] - rows[0] + 1}x{cols[-1] - cols[0] + 1}"


def test_thirty_students_get_thirty_different_networks_and_answer_keys(exercise):
    _, key = exercise
    students = key["students"]
    assert len(students) == 30
    assert len({json.dumps([q["answer"] for q in e["questions"]]) for e in students.values()}) == 30
    assert len({e["network"] for e in students.values()}) == 30
    assert all(len(e["questions"]) == 3 * 4 + 2 + 3 for e in students.values())


def test_every_answer_key_agrees_with_pytorch(exercise):
    _, key = exercise
    for sid, entry in key["students"].items():
        reference = torch_layers(entry["network"])
        answers = {(q["quantity"], q["layer"]): q["answer"] for q in entry["questions"]}
        for layer in ("conv1", "maxpool1", "conv2"):
            shape, params, macs, activations = reference[layer]
            assert answers[("shape", layer)] == "x".join(map(str, shape)), (sid, layer)
            assert answers[("params", layer)] == params, (sid, layer)
            assert answers[("macs", layer)] == macs, (sid, layer)
            assert answers[("activations", layer)] == activations, (sid, layer)
        assert answers[("total params", None)] == sum(v[1] for v in reference.values())
        assert answers[("total macs", None)] == sum(v[2] for v in reference.values())


def test_every_receptive_field_agrees_with_input_gradients(exercise):
    _, key = exercise
    checked = 0
    for sid, entry in key["students"].items():
        for q in entry["questions"]:
            if q["quantity"] == "receptive_field":
                measured = field_by_gradient(entry["network"], q["layer"])
                if measured is not None:
                    assert measured == q["answer"], (sid, q["layer"], entry["network"])
                    checked += 1
    assert checked >= 40          # most fields lie inside the input, away from its borders


def test_the_same_seed_and_roster_give_the_same_sheets(exercise, tmp_path):
    tmp, key = exercise
    again = make_exercise(tmp / "template.cnn", tmp / "roster.csv", tmp_path / "again", seed=7, draw=False)
    assert again["students"] == key["students"]
    other = make_exercise(tmp / "template.cnn", tmp / "roster.csv", tmp_path / "other", seed=8, draw=False)
    assert other["students"] != key["students"]


def test_sheets_answer_files_and_keys_are_written(exercise):
    tmp, key = exercise
    folder = tmp / "out" / "s03"
    sheet = (folder / "sheet.md").read_text()
    entry = key["students"]["s03"]
    assert entry["network"].strip() in sheet and "![the network](network.svg)" in sheet
    assert "# vary" not in sheet and "{size}" not in sheet        # the template's workings stay hidden
    assert (folder / "network.svg").read_text().lstrip().startswith("<?xml")
    assert (folder / "answers.csv").read_text().splitlines()[:2] == ["question,answer", "q1,"]
    rows = (tmp / "out" / "answer-key.csv").read_text().splitlines()
    assert rows[0] == "student,question,asked,answer" and len(rows) == 1 + 30 * 17


def test_check_gives_the_formula_with_the_students_numbers(exercise, tmp_path, capsys):
    tmp, key = exercise
    entry = key["students"]["s05"]
    right = {q["id"]: q["answer"] for q in entry["questions"]}
    wrong = dict(right)
    shape = right["q1"].split("x")
    wrong["q1"] = f"{shape[0]} x {int(shape[1]) - 1} x {shape[2]}"      # an off-by-one height
    wrong["q2"] = str(right["q2"] + 1)
    wrong.pop("q3")
    answers = tmp_path / "answers"
    answers.mkdir()
    (answers / "answers-s05.csv").write_text("question,answer\n" + "".join(f'{q},"{a}"\n' for q, a in wrong.items()))
    separated = {q["id"]: f"{q['answer']:,}" if isinstance(q["answer"], int) else q["answer"]
                 for q in key["students"]["s06"]["questions"]}                     # "1,234"
    (answers / "s06.json").write_text(json.dumps({"answers": separated}))
    [five, six] = check_files(tmp / "out", answers)
    assert six["student"] == "s06" and six["score"] == six["max_score"] == 17      # "1,234" is 1234
    assert five["score"] == 14
    feedback = {q["id"]: q["feedback"] for q in five["questions"]}
    conv1 = next(line for line in entry["network"].splitlines() if "conv(" in line)
    stride = int(conv1.split("stride=")[1][0])
    size = int(entry["network"].split("3x")[1].split("x")[0])
    pad = int(conv1.split("pad=")[1][0])
    kernel = int(conv1.split(", ")[1][0])
    assert (f"H = 1 + floor(({size} + {pad} + {pad} - {kernel}) / {stride}) = {shape[1]}" in feedback["q1"]
            and feedback["q1"].endswith(f"you wrote {wrong['q1']}"))
    assert f"= {right['q2']}; you wrote {right['q2'] + 1}" in feedback["q2"]
    assert feedback["q3"].startswith("no answer; MACs = outputs x (channels x kernel)")
    assert cli_main(["grade", "exercise", "check", str(tmp / "out"), str(answers), "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("student,score,max_score,q1,") and out[1].startswith("s05,14,17,0,0,0,1")


def test_moodle_xml_follows_the_documented_format(exercise):
    xmlschema = pytest.importorskip("xmlschema")
    tmp, key = exercise
    schema = xmlschema.XMLSchema11(str(SCHEMAS / "moodle-quiz.xsd"))
    text = (tmp / "moodle.xml").read_text()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<quiz>')
    schema.validate(text)
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    categories = [q for q in root if q.get("type") == "category"]
    questions = [q for q in root if q.get("type") != "category"]
    assert len(categories) == 17 and len(questions) == 17 * 30
    numerical = [q for q in questions if q.get("type") == "numerical"]
    first = key["students"]["s00"]["questions"][1]           # conv1's parameters
    assert any(q.find("answer/text").text == str(first["answer"]) for q in numerical)
    assert all(q.find("questiontext/file").get("encoding") == "base64" for q in questions)
    with pytest.raises(xmlschema.XMLSchemaValidationError):      # the schema can fail
        schema.validate('<quiz><question type="numerical"><name><text>x</text></name>'
                        '<questiontext format="html"><text>y</text></questiontext>'
                        '<answer fraction="100"><text>3</text></answer></question></quiz>')


@pytest.mark.parametrize("header, body, message", [
    ("# vary size in 28..40\n", "input image: 3x{size}x{sise}", "`{sise}` is not varied"),
    ("# vary size in 28..40\n# vary k in {3, 5}\n", "input image: 3x{size}x{size}", "`k` is varied but"),
    ("# vary size in 40..28\n", "input image: 3x{size}x{size}", "the range `40..28` is empty"),
    ("# vary size in 28 to 40\n", "input image: 3x{size}x{size}", "cannot read the range"),
    ("# vary size in 28..40\n# ask shape of conv9\n", "input image: 3x{size}x{size}", "no layer `conv9`"),
    ("# vary size in 28..40\n# ask shapes of conv1\n", "input image: 3x{size}x{size}", "unknown quantity `shapes`"),
])
def test_a_bad_template_is_a_located_error(tmp_path, header, body, message):
    path = tmp_path / "t.cnn"
    path.write_text(header + "network N {\n    " + body + "\n    conv(4, 3x3) -> relu\n}\n")
    with pytest.raises(CnnSpecError) as err:
        read_template(path)
    assert message in str(err.value) and f"{path}:" in str(err.value)


def test_a_roster_larger_than_the_template_allows_is_refused(tmp_path):
    (tmp_path / "t.cnn").write_text("# vary c in {4, 8}\nnetwork N {\n    input image: 1x8x8\n    conv({c}, 3x3)\n}\n")
    (tmp_path / "roster.csv").write_text("id\na\nb\nc\n")
    with pytest.raises(CnnSpecError, match="2 variants, fewer than the 3 students"):
        make_exercise(tmp_path / "t.cnn", tmp_path / "roster.csv", tmp_path / "out")


def test_invalid_variants_are_drawn_again(tmp_path):
    """size 4 with a 5x5 kernel has no output: never given to a student."""
    (tmp_path / "t.cnn").write_text("# vary size in {4, 12, 16, 20}\n# vary k in {3, 5}\n"
                                    "network N {\n    input image: 1x{size}x{size}\n    conv(2, {k}x{k})\n}\n")
    (tmp_path / "roster.csv").write_text("id\n" + "".join(f"u{i}\n" for i in range(6)))
    key = make_exercise(tmp_path / "t.cnn", tmp_path / "roster.csv", tmp_path / "out", draw=False)
    assert all(not (e["values"]["size"] == 4 and e["values"]["k"] == 5) for e in key["students"].values())
    assert len({json.dumps(e["values"], sort_keys=True) for e in key["students"].values()}) == 6
    assert math.prod([4, 2]) - 1 >= 6


VGG_BLOCKS = """# exercise: Lecture 003's VGG, its first two blocks
# ask shape, receptive_field of conv2, maxpool1, conv4
# ask total params, macs, activations
network VGGStart {
    input image: 3x224x224
    conv(64, 3x3, pad=1) -> relu -> conv(64, 3x3, pad=1) -> relu -> maxpool(2)
    conv(128, 3x3, pad=1) -> relu -> conv(128, 3x3, pad=1) -> relu -> maxpool(2)
    flatten -> dense(10)
}
"""


def vgg_blocks_by_torch():
    """Lecture 003's first two VGG blocks in PyTorch: per layer (shape, field by the recurrence
    checked on the input gradient of a centre unit), and the totals from the tensors."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    layers = [nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1), nn.MaxPool2d(2),
              nn.Conv2d(64, 128, 3, padding=1), nn.Conv2d(128, 128, 3, padding=1), nn.MaxPool2d(2)]
    x = torch.zeros(1, 3, 224, 224)
    shapes, params, macs, activations = [], 0, 0, x.numel()
    for layer in layers:
        y = layer(x)
        if isinstance(layer, nn.Conv2d):
            params += sum(p.numel() for p in layer.parameters())
            macs += y.numel() * layer.in_channels * 9
        shapes.append("x".join(map(str, y.shape[1:])))
        activations += y.numel()
        x = y
    dense = nn.Linear(x.numel(), 10)
    params += sum(p.numel() for p in dense.parameters())
    macs += x.numel() * 10
    activations += 10
    # fields: a small input, weights 1, pooling averaged: the support of a centre unit's gradient
    fields = {}
    probe = torch.zeros(1, 1, 40, 40, requires_grad=True)
    h = probe
    for name, layer in zip(["conv1", "conv2", "maxpool1", "conv3", "conv4"],
                           [nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2),
                            nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)]):
        if isinstance(layer, nn.Conv2d):
            nn.init.constant_(layer.weight, 1.0)
        h = layer(h)
        (grad,) = torch.autograd.grad(h[0, 0, h.shape[2] // 2, h.shape[3] // 2], probe, retain_graph=True)
        rows = np.flatnonzero(grad[0, 0].numpy().any(1))
        fields[name] = int(rows[-1] - rows[0] + 1)
    return {"conv2": shapes[1], "maxpool1": shapes[2], "conv4": shapes[4]}, fields, params, macs, activations


def test_answers_in_the_usual_spellings_of_fields_shapes_and_large_numbers_are_right(tmp_path):
    """`(5, 5)` for a field, `(128, 112, 112)` for a shape and `138,357,544`-style thousands
    separators for a total are right: commas read as what the question asks (the first was
    unreadable and the last read as a shape 1x2x3 before)."""
    (tmp_path / "t.cnn").write_text(VGG_BLOCKS)
    (tmp_path / "roster.csv").write_text("id\nana\n")
    key = make_exercise(tmp_path / "t.cnn", tmp_path / "roster.csv", tmp_path / "out", draw=False)
    shapes, fields, params, macs, activations = vgg_blocks_by_torch()
    questions = {(q["quantity"], q["layer"]): q["id"] for q in key["students"]["ana"]["questions"]}
    spelled = {}
    for layer in ("conv2", "maxpool1", "conv4"):
        spelled[questions[("shape", layer)]] = "(" + shapes[layer].replace("x", ", ") + ")"
        spelled[questions[("receptive_field", layer)]] = f"({fields[layer]}, {fields[layer]})"
    spelled[questions[("total params", None)]] = f"{params:,}"
    spelled[questions[("total macs", None)]] = f"{macs:,}"
    spelled[questions[("total activations", None)]] = f"{activations:,}"
    assert min(params, macs, activations) >= 1_000_000          # two thousands separators at least
    (tmp_path / "answers-ana.json").write_text(json.dumps({"answers": spelled}))
    [result] = check_files(tmp_path / "out", tmp_path / "answers-ana.json")
    assert [q["feedback"] for q in result["questions"] if not q["ok"]] == []
    assert result["score"] == result["max_score"] == 9



def test_the_total_activations_formula_adds_up_to_its_answer(tmp_path):
    """The feedback's sum names every term of the total, the input's values included: its terms
    add up to the answer, and the answer is PyTorch's count (input + every layer's output)."""
    import re

    (tmp_path / "t.cnn").write_text(VGG_BLOCKS)
    (tmp_path / "roster.csv").write_text("id\nana\n")
    key = make_exercise(tmp_path / "t.cnn", tmp_path / "roster.csv", tmp_path / "out", draw=False)
    *_, activations = vgg_blocks_by_torch()
    q = next(q for q in key["students"]["ana"]["questions"] if q["quantity"] == "total activations")
    assert q["answer"] == activations and "input's included" in q["question"]
    terms, total = q["formula"].split(": ", 1)[1].rsplit(" = ", 1)
    assert int(total) == activations
    assert sum(int(n) for n in re.findall(r" (\d+)(?: \+|$)", terms)) == activations


def test_an_answers_csv_filled_in_without_quotes_keeps_the_commas_of_its_answers(tmp_path):
    """The answers.csv handed out, filled in as students type it: `q1,(128, 112, 112)` and
    `q7,1,475,136` unquoted. The answer is the row's last column, commas and all (it was `(128`
    and `1`: wrong, "you wrote 1"). The reference: PyTorch's shapes and counts."""
    (tmp_path / "t.cnn").write_text(VGG_BLOCKS)
    (tmp_path / "roster.csv").write_text("id\nana\n")
    key = make_exercise(tmp_path / "t.cnn", tmp_path / "roster.csv", tmp_path / "out", draw=False)
    shapes, fields, params, macs, activations = vgg_blocks_by_torch()
    truth = {("total params", None): f"{params:,}", ("total macs", None): f"{macs:,}",
             ("total activations", None): f"{activations:,}"}
    for layer in ("conv2", "maxpool1", "conv4"):
        truth[("shape", layer)] = "(" + shapes[layer].replace("x", ", ") + ")"
        truth[("receptive_field", layer)] = f"{fields[layer]}, {fields[layer]}"
    handed_out = (tmp_path / "out" / "ana" / "answers.csv").read_text().splitlines()
    questions = {q["id"]: (q["quantity"], q["layer"]) for q in key["students"]["ana"]["questions"]}
    filled = [handed_out[0]] + [f"{line}{truth[questions[line.rstrip(',')]]}" for line in handed_out[1:]]
    assert any(line.count(",") >= 3 for line in filled)            # unquoted commas in the answers
    (tmp_path / "out" / "ana" / "answers.csv").write_text("\n".join(filled) + "\n")
    [result] = check_files(tmp_path / "out", tmp_path / "out" / "ana" / "answers.csv")
    assert result["student"] == "ana"
    assert [q["feedback"] for q in result["questions"] if not q["ok"]] == []
    assert result["score"] == result["max_score"] == 9


def test_the_activations_question_says_that_layers_computed_in_place_keep_none(tmp_path):
    """ReLU's activation memory is 0 by the README's counting convention (element-wise activations,
    dropout and flatten work in place and add none); the question asked "how many values it
    outputs" -- 2048 for relu1 here, as PyTorch's output has -- and marked that wrong."""
    torch = pytest.importorskip("torch")
    (tmp_path / "t.cnn").write_text("# ask activations of conv1, relu1, flatten1\nnetwork N {\n"
                                    "    input image: 3x16x16\n    conv(8, 3x3, pad=1) -> relu -> flatten\n}\n")
    (tmp_path / "roster.csv").write_text("id\nana\n")
    key = make_exercise(tmp_path / "t.cnn", tmp_path / "roster.csv", tmp_path / "out", draw=False)
    questions = {q["layer"]: q for q in key["students"]["ana"]["questions"]}
    outputs = torch.relu(torch.nn.Conv2d(3, 8, 3, padding=1)(torch.zeros(1, 3, 16, 16))).numel()
    assert questions["conv1"]["answer"] == outputs == 2048
    assert questions["relu1"]["answer"] == questions["flatten1"]["answer"] == 0
    for q in questions.values():
        assert "computed in place" in q["question"] and "keeps none" in q["question"], q["question"]
