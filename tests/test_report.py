"""`cnnspec report`: the page's data against the analysis, and a page that needs nothing else."""
import json
import re
import shutil

import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.cli import main
from cnnspec.report import page, report_data, write_report
from conftest import SPECS

HOSTILE = """# a comment that tries </script><script>alert(1)</script> and <!-- too
block b(c) {
    conv(c, 3x3, pad=1) -> relu
}
network Hostile {
    input image: 3x16x16
    b(4)    # </script>
    flatten -> dense(2)
}
"""


def payload(html: str) -> dict:
    """The page's JSON, read as the browser reads it (text of the script element)."""
    found = re.search(r'<script type="application/json" id="cnnspec-data">(.*?)</script>', html, re.S)
    assert found, "no data element"
    return json.loads(found.group(1))


def test_data_follows_the_analysis():
    net = cnnspec.load(SPECS / "resnet18.cnn")
    data = report_data(net)
    summary = net.summary()
    assert [layer["name"] for layer in data["layers"]] == [layer["name"] for layer in summary["layers"]]
    assert data["totals"] == summary["totals"] and data["input"] == summary["input"]
    conv = next(layer for layer in data["layers"] if layer["name"] == "basic1.conv1")
    assert conv["call"] == "conv(64, 3x3, pad=1, bias=false)"
    assert conv["describe"] == "conv(64, 3x3, pad 1)" and conv["scope"] == ["basic1"]
    assert conv["param_shapes"] == {"weight": [64, 64, 3, 3]}
    assert conv["memory"] == {"output": 64 * 56 * 56 * 4, "params": 36864 * 4}
    assert conv["field"] == {"size": [19, 19], "extent": [[19, 1], [19, 1]], "stride": [[4, 1], [4, 1]],
                             "padding": [[9, 1], [9, 1]], "aligned": True}
    assert conv["where"]["file"] == "resnet18.cnn" and "conv(c, 3x3" in conv["where"]["source"]
    bn = next(layer for layer in data["layers"] if layer["name"] == "batchnorm1")
    assert bn["memory"]["params"] == (128 + 128) * 4                 # gamma, beta and running statistics
    block = data["blocks"]["down1"]
    members = [layer for layer in data["layers"] if layer["name"].startswith("down1.")]
    assert block["type"] == "down" and block["args"] == {"c": 128}
    assert block["params"] == sum(layer["params"] for layer in members) == 230144
    assert block["macs"] == sum(layer["macs"] for layer in members)
    assert block["output"] == members[-1]["name"] and block["output_shape"] == [128, 28, 28]


def test_the_page_is_self_contained(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed")
    path = write_report(cnnspec.load(SPECS / "googlenet.cnn"), tmp_path / "g.html")
    html = open(path, encoding="utf-8").read()
    assert "<svg" in html and 'class="cluster"' in html              # graphviz's drawing, inline
    assert not re.search(r"<(link|iframe|img|object|embed|base)\b", html, re.I)
    assert not re.search(r"<script[^>]*\ssrc=", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:|//)", html, re.I)
    for url in re.findall(r"https?://[^\s\"'<>)]+", html):
        assert url.startswith("http://www.w3.org/"), url             # only XML namespaces
    assert "connect-src 'none'" in html and "default-src 'none'" in html
    data = payload(html)["data"]
    assert data["network"] == "GoogLeNet"
    assert sum(b["type"] == "inception" for b in data["blocks"].values()) == 9


def test_the_page_survives_hostile_text(tmp_path):
    net = cnnspec.loads(HOSTILE, file=str(tmp_path / "h.cnn"))
    html = page(net)
    data = payload(html)["data"]                                     # the JSON is intact
    assert data["layers"][-1]["name"] == "dense1"
    assert "</script>" in data["blocks"]["b1"]["where"]["source"]   # kept as text ...
    assert html.count("</script>") == 2                              # ... never as markup
    assert "<!--" not in html.split('id="cnnspec-data">')[1].split("</script>")[0]


def test_report_command(tmp_path, capsys):
    out = tmp_path / "lenet.html"
    assert main(["report", str(SPECS / "lenet5.cnn"), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert payload(out.read_text(encoding="utf-8"))["data"]["totals"]["params"] == 61706
    assert main(["report", str(SPECS / "lenet5.cnn"), "-o", str(tmp_path / "lenet.txt")]) == 1
    assert "give -o NAME.html" in capsys.readouterr().err
    bad = tmp_path / "bad.cnn"
    bad.write_text("network B {\n input x: 1x8x8\n conv(2, 9x9)\n}\n")
    assert main(["report", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bad.cnn:3:" in err and "Traceback" not in err


def test_report_of_the_second_network(tmp_path):
    out = tmp_path / "d.html"
    assert main(["report", str(SPECS / "dcgan64.cnn"), "--network", "Discriminator", "-o", str(out)]) == 0
    data = payload(out.read_text(encoding="utf-8"))["data"]
    assert data["network"] == "Discriminator" and data["totals"]["params"] == 2765568   # published DCGAN D (64x64)


def test_report_without_graphviz(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = tmp_path / "lenet.html"
    assert main(["report", str(SPECS / "lenet5.cnn"), "-o", str(out)]) == 0
    assert "the page has no drawing: graphviz's dot program was not found" in capsys.readouterr().err
    data = payload(out.read_text(encoding="utf-8"))
    assert data["note"].startswith("graphviz's dot program was not found") and data["data"]["layers"]


def test_large_networks_are_not_drawn(monkeypatch):
    from cnnspec.report import build as module

    monkeypatch.setattr(module, "MAX_DRAWN_LAYERS", 10)
    svg, note = module.drawing(cnnspec.load(SPECS / "lenet5.cnn"))
    assert svg is None and note == "14 layers: too many to draw (at most 10)"


def test_unwritable_path(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CnnSpecError, match="cannot write"):
        write_report(cnnspec.load(SPECS / "lenet5.cnn"), tmp_path / "file" / "x.html")


def test_pyproject_ships_the_page_assets():
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cnnspec.report"]
    assets = [p.relative_to(root / "cnnspec" / "report").as_posix() for p in (root / "cnnspec" / "report" / "assets").iterdir()]
    assert assets and all(any(fnmatch.fnmatch(a, pattern) for pattern in patterns) for a in assets), (assets, patterns)


def test_report_does_not_import_numba(tmp_path):
    """The page is analysis only: a cold `cnnspec report` never loads numba (nor matplotlib)."""
    import subprocess
    import sys

    out = tmp_path / "r.html"
    code = ("import sys, cnnspec.cli; rc = cnnspec.cli.main(['report', %r, '-o', %r]); "
            "assert 'numba' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'; sys.exit(rc)"
            ) % (str(SPECS / "resnet18.cnn"), str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert payload(out.read_text(encoding="utf-8"))["data"]["totals"]["params"] == 11_689_512
