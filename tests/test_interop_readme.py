"""The README's section "When you outgrow one CPU", run as written: its shell sessions (commands and
the output they print), the PyTorch training step, the DistributedDataParallel lines (with the
`gloo` backend on a CPU instead of `nccl` on GPUs) and the ResNet-18 import."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from conftest import SPECS
from interop_cases import code_blocks, readme_section

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SECTION = readme_section()


def run_session(block: str, capsys):
    """Each `$ command` of a shell block, its output compared with the lines the README shows."""
    steps = re.split(r"^\$ ", block, flags=re.M)[1:]
    assert steps, "no commands in the block"
    for step in steps:
        command, _, expected = step.partition("\n")
        if command.startswith("cat "):
            got = open(command[4:]).read()
        else:
            args = shlex.split(command)
            assert args[0] == "cnnspec"
            assert main(args[1:]) == 0, command
            got = capsys.readouterr().out
        version = re.compile(r"\(pytorch [^,]*, opset")            # the exporter's own version
        assert version.sub("(pytorch, opset", got.strip()) == version.sub("(pytorch, opset", expected.strip()), command


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    shutil.copy(SPECS / "lenet5.cnn", tmp_path / "specs")
    # what `cnnspec train specs/lenet5.cnn --out runs/lenet5` leaves (training is tested elsewhere)
    (tmp_path / "runs" / "lenet5").mkdir(parents=True)
    cnnspec.load(SPECS / "lenet5.cnn").compile(seed=2).save(tmp_path / "runs" / "lenet5" / "weights.npz")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_export_and_import_commands_print_what_the_readme_shows(workdir, capsys):
    sessions = [b for b in code_blocks(SECTION) if b.startswith("$ cnnspec export")]
    assert len(sessions) == 1
    run_session(sessions[0], capsys)
    assert (workdir / "lenet5.pt").is_file() and (workdir / "lenet5_again.npz").is_file()


def python_blocks():
    blocks = code_blocks(SECTION, "python")
    step = next(b for b in blocks if "optimizer.step()" in b)
    ddp = next(b for b in blocks if "DistributedDataParallel" in b)
    export = next(b for b in blocks if "torch.onnx.export" in b)
    return step, ddp, export


def test_the_training_step_runs_and_trains(workdir, monkeypatch):
    step, _, _ = python_blocks()
    main(["export", "specs/lenet5.cnn", "--to", "pytorch", "-o", "lenet5.py", "--weights",
          "runs/lenet5/weights.npz"])
    monkeypatch.syspath_prepend(str(workdir))
    scope = {}
    exec(step, scope)
    before = scope["loss"].item()
    exec("for _ in range(10):\n    loss = F.cross_entropy(model(x, logits=True), y)\n"
         "    optimizer.zero_grad(); loss.backward(); optimizer.step()\n", scope)
    assert scope["loss"].item() < before            # the exported module learns in PyTorch
    sys.modules.pop("lenet5", None)


def test_the_distributed_data_parallel_lines_run(workdir):
    """torchrun with one process, the `gloo` backend and the CPU in place of `nccl` and a GPU."""
    step, ddp, _ = python_blocks()
    main(["export", "specs/lenet5.cnn", "--to", "pytorch", "-o", "lenet5.py", "--weights",
          "runs/lenet5/weights.npz"])
    cpu = ddp.replace('"nccl"', '"gloo"').replace("model.to(device), device_ids=[device]", "model")
    assert cpu != ddp
    head, sep, rest = step.partition('model.load_state_dict(torch.load("lenet5.pt"))\n')
    assert sep
    script = head + sep + cpu + rest + "\nprint('step', loss.item())\ntorch.distributed.destroy_process_group()\n"
    (workdir / "train.py").write_text(script)
    (workdir / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(workdir / "tmp")}     # torchelastic's folders
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                             "--standalone", "train.py"], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step" in result.stdout


def test_resnet18_import_as_the_readme_shows(workdir, capsys):
    """The README's torch.onnx.export call on torchvision's resnet18 written out (tests/
    test_interop_import.py), then its `cnnspec import` and `cat` session."""
    from test_interop_import import resnet18_module

    _, _, export = python_blocks()
    model = resnet18_module()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(export, {"torch": torch, "model": model})
    session = next(b for b in code_blocks(SECTION) if b.startswith("$ cnnspec import resnet18.onnx"))
    run_session(session, capsys)
    net = cnnspec.load("resnet18.cnn")
    assert net.summary()["totals"]["params"] == 11_689_512
    weights = dict(np.load("resnet18.npz"))
    assert set(weights) == set(net.compile(seed=0).arrays())


def test_the_readme_lists_every_operator_import_reads():
    """The list of ONNX operators supported on import is the importer's own, both ways."""
    from cnnspec.interop.onnx_import import supported_operators

    start = SECTION.index("ONNX operators supported on import")
    listed = SECTION[start:SECTION.index("Anything else is an error", start)]
    named = set(re.findall(r"`([A-Z][A-Za-z]+)`", listed))
    tensors, folded = supported_operators()
    assert named == set(tensors) | set(folded)
