"""The copies of the contracts in tests/contracts/ are the ones in shared/docs/ (when it is beside
the repository), so the contract tests of a clone without shared/ test the real contract."""
import pytest

from conftest import CONTRACTS, SHARED_DOCS


@pytest.mark.parametrize("name", ["dsl.md", "layer-api.md"])
def test_contract_copies_are_current(name):
    copy = (CONTRACTS / name).read_text()
    assert "network " in copy or "_forward(" in copy           # the copy holds a contract
    shared = SHARED_DOCS / name
    if shared.is_file():
        assert copy == shared.read_text(), f"tests/contracts/{name} differs from shared/docs/{name}: copy it again"
