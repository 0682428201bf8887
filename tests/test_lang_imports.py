"""``import "path.cnn"``: blocks from other files, relative to the importing file."""
import pytest

from cnnspec.errors import CnnSpecError
from cnnspec.lang import compile_file, compile_source

BASIC = "block basic(c) {\n    main = conv(c, 3x3, pad=1) -> relu\n    add(in, main)\n}\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_import_relative_to_the_importing_file(tmp_path):
    write(tmp_path / "lib" / "resnet.cnn", 'import "../common/act.cnn"\n' + BASIC)
    write(tmp_path / "common" / "act.cnn", "block act() { relu }\n")
    main = write(tmp_path / "nets" / "net.cnn",
                 'import "../lib/resnet.cnn"\nnetwork N {\n    input x: 4x8x8\n    basic(4) -> act\n}\n')
    graph = compile_file(main)
    assert list(graph) == ["x", "basic1.conv1", "basic1.relu1", "basic1.add1", "act1.relu1"]
    assert graph.graph["file"] == str(main)
    sources = graph.graph["sources"]
    assert set(sources) == {str(main), str(tmp_path / "lib" / "resnet.cnn"),
                            str(tmp_path / "common" / "act.cnn")}
    assert graph.nodes["basic1.conv1"]["pos"].file == str(tmp_path / "lib" / "resnet.cnn")


def test_a_file_imported_twice_counts_once(tmp_path):
    write(tmp_path / "base.cnn", "block act() { relu }\n")
    write(tmp_path / "a.cnn", 'import "base.cnn"\nblock a() { act }\n')
    write(tmp_path / "b.cnn", 'import "base.cnn"\nblock b() { act }\n')
    main = write(tmp_path / "main.cnn", 'import "a.cnn"\nimport "b.cnn"\nimport "./a.cnn"\n'
                 "network N {\n    input x: 4\n    a -> b\n}\n")
    assert list(compile_file(main)) == ["x", "a1.act1.relu1", "b1.act1.relu1"]


def test_imported_networks_and_train_sections_are_ignored(tmp_path):
    write(tmp_path / "other.cnn", BASIC + "network Other { input y: 2 }\ntrain { epochs = 1 }\n")
    main = write(tmp_path / "main.cnn",
                 'import "other.cnn"\nnetwork N {\n    input x: 4x8x8\n    basic(2)\n}\n')
    graph = compile_file(main)
    assert graph.graph["network"] == "N" and graph.graph["train"] is None


def test_text_without_a_file_imports_from_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "blocks.cnn", BASIC)
    monkeypatch.chdir(tmp_path)
    graph = compile_source('import "blocks.cnn"\nnetwork N {\n    input x: 4x8x8\n    basic(4)\n}\n')
    assert "basic1.add1" in graph


def error_of_file(path) -> CnnSpecError:
    with pytest.raises(CnnSpecError) as info:
        compile_file(path)
    return info.value


def test_missing_file(tmp_path):
    main = write(tmp_path / "main.cnn", 'network N { input x: 4 }\nimport "lib/nope.cnn"\n')
    err = error_of_file(main)
    assert (err.file, err.line, err.col) == (str(main), 2, 8)
    assert "cannot find `lib/nope.cnn`" in err.message
    assert str(tmp_path / "lib" / "nope.cnn") in err.hint


def test_cyclic_imports(tmp_path):
    write(tmp_path / "a.cnn", 'import "b.cnn"\nblock a() { relu }\n')
    write(tmp_path / "b.cnn", 'block b() { relu }\nimport "a.cnn"\n')
    main = tmp_path / "a.cnn"
    err = error_of_file(main)
    assert (err.file, err.line, err.col) == (str(tmp_path / "b.cnn"), 2, 8)
    assert "cyclic import of `a.cnn`" in err.message and "a.cnn -> b.cnn -> a.cnn" in err.hint


def test_a_file_importing_itself(tmp_path):
    main = write(tmp_path / "self.cnn", 'import "self.cnn"\nnetwork N { input x: 4 }\n')
    err = error_of_file(main)
    assert (err.line, err.col) == (1, 8) and "cyclic import" in err.message


def test_duplicate_block_names_across_files(tmp_path):
    write(tmp_path / "lib.cnn", "block act() { relu }\n")
    main = write(tmp_path / "main.cnn",
                 'import "lib.cnn"\nblock act() { sigmoid }\nnetwork N { input x: 4 }\n')
    err = error_of_file(main)
    assert (err.file, err.line, err.col) == (str(main), 2, 7)
    assert "block `act` is defined twice" in err.message and f"{tmp_path / 'lib.cnn'}:1" in err.hint


def test_errors_inside_an_imported_file_point_into_it(tmp_path):
    lib = write(tmp_path / "lib.cnn", "block act() {\n    rleu\n}\n")
    main = write(tmp_path / "main.cnn", 'import "lib.cnn"\nnetwork N {\n    input x: 4\n    act\n}\n')
    err = error_of_file(main)
    assert (err.file, err.line, err.col) == (str(lib), 2, 5)
    assert str(err).splitlines()[1] == "        rleu" and "`relu`" in err.hint
    write(tmp_path / "lib.cnn", "block act( {\n}\n")
    err = error_of_file(main)
    assert err.file == str(lib) and err.line == 1


def test_unreadable_files(tmp_path):
    err = error_of_file(tmp_path / "none.cnn")
    assert err.file == str(tmp_path / "none.cnn") and err.line is None and "no such .cnn file" in err.message
    bad = tmp_path / "bad.cnn"
    bad.write_bytes(b"network N {\n  input x: 4  # caf\xe9\n}")               # Latin-1, not UTF-8
    assert error_of_file(bad).message == "not UTF-8 text: byte 0xe9 at line 2, column 20 (save the file as UTF-8)"
    write(tmp_path / "lib.cnn", "")
    (tmp_path / "lib.cnn").write_bytes(b"\xff")
    main = write(tmp_path / "main.cnn", 'import "lib.cnn"\nnetwork N { input x: 4 }\n')
    err = error_of_file(main)
    assert (err.line, err.col) == (1, 8) and "`lib.cnn` is not UTF-8 text" in err.message
    (tmp_path / "dir.cnn").mkdir()
    main = write(tmp_path / "main.cnn", 'import "dir.cnn"\nnetwork N { input x: 4 }\n')
    assert "cannot import `dir.cnn`: this file is a folder" in error_of_file(main).message
