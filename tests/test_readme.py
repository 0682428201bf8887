"""Everything the README tells a user works as pasted: its links resolve, the manual it points to is
in the package, the quick start writes what later examples read, and the examples that are cheap
to run are run exactly as written (in a scratch folder beside the repository's specs/), their
output compared with what the README shows.

The README's commands are the lines starting with ``$ `` in its code blocks (a command goes on over
lines that end with ``\\`` or leave a quote open) and the two quick-start commands. Training,
benchmarks and grading are not run here (too long for the suite): their inputs must exist, or be
written by a command earlier in the README.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnspec
from cnnspec import docs
from cnnspec.train.progress import CompileNotice
from conftest import CONTRACTS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CHEAP = ("cnnspec check", "cnnspec summary", "cnnspec render", "cnnspec evaluate", "cnnspec run", "python -c")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def code_blocks(text: str) -> list:
    """(the line before the block, the block's lines) for every fenced code block."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = lines.index("```", i + 1) if "```" in lines[i + 1:] else len(lines)
            before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            out.append((before, lines[i + 1:j]))
            i = j + 1
        else:
            i += 1
    return out


def complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:                     # a quote still open
        return False
    return True


def examples() -> list:
    """(command, the output the README shows under it) for every ``$`` command, in order."""
    out = []
    for _, lines in code_blocks(README):
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            i += 1
            while not complete(command.split("  #")[0].rstrip()) and i < len(lines):
                command += "\n" + lines[i]
                i += 1
            shown = []
            while i < len(lines) and not lines[i].startswith("$ "):
                shown.append(lines[i])
                i += 1
            out.append((command.split("  #")[0].rstrip(), shown))
    return out


def run_folder(path: str) -> str:
    """The run directory of a --weights/--init argument: a weights file's folder, or the folder."""
    return str(Path(path).parent) if path.endswith(".npz") else path


QUICK_START = [block[0] for _, block in code_blocks(section("Quick start"))]
EXAMPLES = examples()


def test_quick_start_is_two_commands_and_writes_what_the_examples_read():
    assert len(QUICK_START) == 2, "`.ci/run` runs the Quick start's two code blocks: keep them two"
    install, tests = QUICK_START
    assert install.startswith("pip install -e . && cnnspec train specs/lenet5.cnn")
    assert tests == 'pip install -e ".[test]" && pytest'
    written = {m.group(1) for c in [install] + [c for c, _ in EXAMPLES] for m in re.finditer(r"--out (\S+)", c)}
    read = {run_folder(m.group(1)) for c, _ in EXAMPLES for m in re.finditer(r"--(?:weights|init) (runs/\S+)", c)}
    assert read and read <= written, f"the README reads {sorted(read - written)} but no command writes them"
    assert "runs/lenet5" in written and "--out runs/lenet5" in install


def test_the_ci_script_runs_the_quick_start():
    """.ci/run takes the commands from this section, as written; it fails on a skipped test."""
    script = (ROOT / ".ci" / "run").read_text()
    assert '"## Quick start"' in script and 'bash -euo pipefail -c "$command"' in script
    assert "python3 -m venv" in script and "skipped" in script and "|| echo" not in script


def anchors() -> set:
    """GitHub's anchors of the README's headings."""
    out = set()
    for line in README.split("\n"):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add("#" + re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_link_resolves():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert len(links) > 15
    for target in links:
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target in anchors(), f"no heading for the link {target}"
        else:
            assert (ROOT / target).exists(), f"the README links to {target}, which is not in the repository"
    outside = README.replace(section("Development"), "")
    assert "shared/docs" not in outside, "a user of the repository has no shared/docs/: link cnnspec/docs/"


@pytest.mark.parametrize("topic, name", [("language", "dsl.md"), ("layer-api", "layer-api.md")])
def test_the_manual_is_in_the_package_and_current(topic, name, capsys):
    """cnnspec/docs/ (package data, what `cnnspec help` prints) holds the very contracts the tests
    read from tests/contracts/ (which test_contracts.py holds equal to shared/docs/)."""
    packaged = docs.path(topic)
    assert packaged.name == name and packaged.parent == Path(cnnspec.__file__).resolve().parent / "docs"
    assert packaged.read_text(encoding="utf-8") == (CONTRACTS / name).read_text(encoding="utf-8"), (
        f"cnnspec/docs/{name} differs from tests/contracts/{name}: cp tests/contracts/{name} cnnspec/docs/")
    from cnnspec.cli import main

    assert main(["help", topic]) == 0
    assert capsys.readouterr().out == packaged.read_text(encoding="utf-8").rstrip("\n") + "\n"


def test_the_wheel_carries_the_manual(tmp_path):
    """A real wheel of this checkout (as `grade gradescope-bundle` builds it) holds cnnspec/docs."""
    import zipfile

    from cnnspec.grade.bundle import build_wheel

    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
    assert {"cnnspec/docs/dsl.md", "cnnspec/docs/layer-api.md", "cnnspec/grammar/cnn.lark"} <= names


def test_inputs_of_every_command_exist():
    """Files the README's commands read are in the repository, or written by an earlier command
    (or shown as a file in the README, like bad.cnn)."""
    shown_files = {m.group(1) for before, _ in code_blocks(README) for m in [re.search(r"\(`([\w.]+)`\):$", before)] if m}
    written = set(shown_files)
    for command, _ in [(c, []) for c in QUICK_START] + EXAMPLES:
        words = shlex.split(command.replace("\\\n", " "), comments=False)
        for i, word in enumerate(words):
            if word.endswith((".cnn", ".png", ".npy", ".npz", ".jpg")) and not word.startswith("$("):
                flag = words[i - 1] if i else ""
                if flag in ("-o", "--output", "--plot", "--feature-maps", "--filters") or flag.endswith("-out"):
                    written.add(word)
                elif not (ROOT / word).exists() and word not in written and not any(
                        word.startswith(out + "/") for out in written):
                    raise AssertionError(f"`{command}` reads {word}, which neither the repository nor an "
                                         f"earlier command has")
        written.update(m.group(1) for m in re.finditer(r"--out (\S+)", command))
        written.update(re.findall(r"\.save\('([^']+)'", command))        # np.save, Image.save


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder with the repository's specs/ and what the quick start writes (runs/lenet5: initial
    weights; training is too long for the suite), and shell functions for cnnspec and python."""
    folder = tmp_path_factory.mktemp("readme")
    os.symlink(ROOT / "specs", folder / "specs")
    for command, _ in EXAMPLES:                     # what training would have written: initial weights
        match = re.match(r"cnnspec (?:evaluate|run) (\S+\.cnn) .*--weights (runs/\S+)", command.replace("\\\n", " "))
        if match:
            spec, weights = match.groups()
            path = folder / (weights if weights.endswith(".npz") else f"{weights}/weights.npz")
            path.parent.mkdir(parents=True, exist_ok=True)
            cnnspec.load(ROOT / spec).compile(seed=0).save(path)
    for before, lines in code_blocks(README):
        match = re.search(r"\(`([\w.]+)`\):$", before)
        if match:
            (folder / match.group(1)).write_text("\n".join(lines) + "\n")
    for command, _ in EXAMPLES:                     # the README's own set-up steps (lecture000.npy, ...)
        if command.startswith("python -c") and ".save(" in command:
            assert run_as_pasted(command, folder).returncode == 0
    return folder


def run_as_pasted(command: str, folder: Path) -> subprocess.CompletedProcess:
    """Run ``command`` in ``folder`` as a shell would. A plain ``cnnspec ...`` line (no shell syntax
    beyond quotes) runs in this process, ``cnnspec.cli.main`` of the words the shell would pass
    (no seconds of importing per command); anything else in bash."""
    if command.startswith("cnnspec ") and not re.search(r"[$`|<>;&]", command):
        import contextlib
        import io

        from cnnspec.cli import main

        out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
        try:
            os.chdir(folder)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    status = main(shlex.split(command.replace("\\\n", " "))[1:])
                except SystemExit as exit_:
                    status = exit_.code
        finally:
            os.chdir(here)
        return subprocess.CompletedProcess(command, status, out.getvalue(), err.getvalue())
    python = shlex.quote(sys.executable)
    prelude = f'python() {{ {python} "$@"; }}\ncnnspec() {{ {python} -m cnnspec "$@"; }}\n'
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(["bash", "-c", prelude + command], cwd=folder, capture_output=True, text=True,
                          env=env, timeout=600)


def shown_lines_appear(shown: list, actual: str) -> None:
    """The README's output lines, "..." standing for lines left out, appear in order in ``actual``."""
    lines = actual.rstrip("\n").split("\n")
    at = 0
    for line in shown:
        if line.strip() in ("...", ""):
            continue
        while at < len(lines) and lines[at].rstrip() != line.rstrip():
            at += 1
        assert at < len(lines), f"the README shows\n{line}\nwhich the command does not print:\n{actual}"
        at += 1


CHEAP_EXAMPLES = [(c, s) for c, s in EXAMPLES if c.startswith(CHEAP)]


def test_the_cheap_examples_are_the_ones_expected():
    commands = [c.split("\n")[0][:40] for c, _ in CHEAP_EXAMPLES]
    assert len(commands) >= 9, commands
    assert {c.split()[1] for c, _ in CHEAP_EXAMPLES if c.startswith("cnnspec")} == {
        "check", "summary", "evaluate", "run"} | ({"render"} & {c.split()[1] for c, _ in EXAMPLES})


@pytest.mark.parametrize("command, shown", CHEAP_EXAMPLES, ids=[c.split("\n")[0][:60] for c, _ in CHEAP_EXAMPLES])
def test_cheap_example_runs_as_pasted(command, shown, scratch):
    if command.startswith("cnnspec render") and shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (CI installs it)")
    done = run_as_pasted(command, scratch)
    notice = CompileNotice.MESSAGE.split(" ...")[0]         # a first run's compile notice is no output
    output = "".join(line for line in (done.stdout + done.stderr).splitlines(True) if not line.startswith(notice))
    expect_error = any(line.startswith(("error:", f"{command.split()[-1]}:")) and ": error:" in line
                       for line in shown)
    assert (done.returncode != 0) == expect_error, f"exit {done.returncode}:\n{output}"
    trained = "--weights runs/" in command        # scratch holds initial weights: other numbers
    if trained:                                   # headings and file lines hold no trained figure
        lines = [line.rstrip() for line in output.split("\n")]
        fixed = [line.replace("best.npz", "weights.npz").rstrip() for line in shown
                 if line.rstrip().endswith(":") or line.startswith(("wrote ", "using "))]
        assert fixed and all(line in lines for line in fixed), output
    elif "..." not in [line.strip() for line in shown] and shown:
        assert [line.rstrip() for line in output.rstrip("\n").split("\n")] == [line.rstrip() for line in shown]
    else:
        shown_lines_appear(shown, output)
    for word in shlex.split(command.replace("\\\n", " ")):
        if word.endswith(".png") and "pictures/" not in word:
            assert (scratch / word).is_file(), f"{command} did not write {word}"


@pytest.mark.parametrize("setuptools, wheel, offline", [
    ("65.5.0", None, False),        # Python 3.11's fresh venv: no bdist_wheel, build in isolation
    ("65.5.0", "0.43.0", True),     # the wheel package brings bdist_wheel
    ("70.1.0", None, True),         # setuptools has bdist_wheel itself
    ("84.2.1", None, True),
])
def test_the_bundle_builds_its_wheel_where_setuptools_cannot(monkeypatch, tmp_path, setuptools, wheel, offline):
    """`grade gradescope-bundle` on an instructor's fresh venv: --no-build-isolation only where this
    environment can make wheels; else pip's isolated build with pyproject.toml's build requirements."""
    from importlib import metadata

    from cnnspec.grade import bundle

    versions = {"setuptools": setuptools, "wheel": wheel}

    def version(name):
        if versions.get(name) is None:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)
    assert bundle._can_build_wheels() is offline
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        (tmp_path / "cnnspec-0.1.0-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bundle.subprocess, "run", fake_run)
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    assert bundle.build_wheel(tmp_path).name == "cnnspec-0.1.0-py3-none-any.whl"
    assert ("--no-build-isolation" in seen[0]) is offline
    requires = (ROOT / "pyproject.toml").read_text().split("[build-system]")[1].split("\n")[1]
    assert '"setuptools>=70.1"' in requires            # an isolated build gets bdist_wheel built in
