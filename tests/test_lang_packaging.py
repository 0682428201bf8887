"""The grammar is found in the checkout and ships in the wheel as cnnspec/grammar/cnn.lark."""
from pathlib import Path

import pytest

from cnnspec.lang.parser import grammar_path

ROOT = Path(__file__).resolve().parent.parent


def test_the_grammar_is_found():
    path = grammar_path()
    assert path.name == "cnn.lark" and path.is_file()
    if (ROOT / "grammar" / "cnn.lark").is_file():
        assert path in (ROOT / "grammar" / "cnn.lark", ROOT / "cnnspec" / "grammar" / "cnn.lark")


def test_pyproject_ships_the_grammar_and_every_package():
    tomllib = pytest.importorskip("tomllib")
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["cnnspec.grammar"] == "grammar"
    assert "*.lark" in config["package-data"]["cnnspec.grammar"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cnnspec").rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = on_disk - listed
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert "cnnspec.grammar" in listed
