"""Every error of the language front end about a file says where (issue 17): file:line:col and a
caret, also for "no `network`", a --network the file does not have, and the last-guard "nested too
deeply"."""
import pytest

import cnnspec
from cnnspec.cli import main


def test_no_network_points_into_the_file(tmp_path, capsys):
    path = tmp_path / "blocks.cnn"
    path.write_text("# blocks only\nblock b(c) {\n    conv(c, 3x3)\n}\n")
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err.splitlines()[:3] == [
        f"{path}:2:7: error: no `network` in this file", "    block b(c) {", "          ^"]
    empty = tmp_path / "empty.cnn"
    empty.write_text("")
    assert main(["check", str(empty)]) == 1
    assert capsys.readouterr().err.splitlines()[:3] == [f"{empty}:1:1: error: no `network` in this file", "    ", "    ^"]


def test_an_unknown_network_option_points_at_the_file_s_networks(tmp_path, capsys):
    path = tmp_path / "two.cnn"
    path.write_text("network Alpha {\n    input x: 1\n    relu\n}\nnetwork Beta {\n    input x: 1\n    relu\n}\n")
    assert main(["summary", "--network", "Betta", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:1:9: error: no network `Betta` in this file", "    network Alpha {", "            ^~~~~",
        "hint: did you mean `Beta`?"]


def test_the_last_guard_against_deep_nesting_is_located(monkeypatch):
    def too_deep(*args, **kwargs):
        raise RecursionError

    monkeypatch.setattr("cnnspec.lang.build_graph", too_deep)
    text = "network N {\n    input x: 1x8x8\n    (conv(2, 3x3) -> (relu)) * 2\n}\n"
    with pytest.raises(cnnspec.CnnSpecError) as err:
        cnnspec.loads(text, file="deep.cnn")
    # the first bracket that opens the deepest level (3: the network's `{`, `(`, `conv(`)
    assert str(err.value).splitlines()[:3] == ["deep.cnn:3:10: error: the file is nested too deeply to read",
                                               "        (conv(2, 3x3) -> (relu)) * 2", "             ^"]
