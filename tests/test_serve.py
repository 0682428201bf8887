"""`cnnspec serve`: its endpoints over real HTTP (urllib against a server in a thread), and that no
request reads or writes a file outside the served folder."""
import http.client
import json
import os
import threading
import urllib.error
import urllib.request

import pytest

from cnnspec import CnnSpecError
from cnnspec.report.server import MAX_BODY, make_server
from conftest import SPECS

LENET = (SPECS / "lenet5.cnn").read_text()
BLOCKS = "block cbr(c) {\n    conv(c, 3x3, pad=1) -> batchnorm -> relu\n}\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """root/ (served): lenet5.cnn, blocks.cnn, sub/uses.cnn (imports ../blocks.cnn), links to the
    outside; outside/: secret.cnn and secret.txt that no request may read."""
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "lenet5.cnn").write_text(LENET)
    (root / "blocks.cnn").write_text(BLOCKS)
    (root / "sub" / "uses.cnn").write_text('import "../blocks.cnn"\nnetwork U {\n    input x: 3x8x8\n    cbr(4)\n}\n')
    (outside / "secret.cnn").write_text(BLOCKS.replace("cbr", "secret"))
    (outside / "secret.txt").write_text("the secret")
    os.symlink(outside / "secret.cnn", root / "link.cnn")          # a link leading out
    os.symlink(outside, root / "out")                              # a folder link leading out
    os.symlink(root / "lenet5.cnn", root / "sub" / "inner.cnn")    # a link that stays inside
    server = make_server(root, root / "lenet5.cnn", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"root": root, "outside": outside, "port": server.server_address[1],
           "base": f"http://127.0.0.1:{server.server_address[1]}"}
    server.shutdown()
    server.server_close()


def get(site, path, headers=None):
    request = urllib.request.Request(site["base"] + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def post(site, path, value, headers=None, raw=None):
    body = raw if raw is not None else json.dumps(value).encode()
    request = urllib.request.Request(site["base"] + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-Cnnspec": "1", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_page_and_files(site):
    status, body, headers = get(site, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    html = body.decode()
    assert "connect-src 'self'" in html and 'id="source"' in html
    payload = json.loads(html.split('id="cnnspec-data">')[1].split("</script>")[0])
    assert payload["open"] == "lenet5.cnn" and payload["data"] is None
    status, body, _ = get(site, "/api/files")
    assert status == 200
    assert json.loads(body)["files"] == ["blocks.cnn", "lenet5.cnn", "sub/inner.cnn", "sub/uses.cnn"]
    status, body, _ = get(site, "/api/file?path=lenet5.cnn")
    assert status == 200 and json.loads(body) == {"path": "lenet5.cnn", "text": LENET}
    status, body, _ = get(site, "/api/file?path=sub/inner.cnn")               # a link inside the folder
    assert status == 200 and json.loads(body)["text"] == LENET


@pytest.mark.parametrize("query, status", [
    ("../outside/secret.txt", 403), ("..%2Foutside%2Fsecret.txt", 403), ("%2e%2e/outside/secret.txt", 403),
    ("sub/../../outside/secret.txt", 403), ("sub%2F..%2F..%2Foutside%2Fsecret.cnn", 403),
    ("{outside}/secret.txt", 403), ("%2F{outside_rel}/secret.txt", 403), ("/etc/passwd", 403),
    ("link.cnn", 403), ("out/secret.txt", 403), ("out%2Fsecret.cnn", 403),
    ("%252e%252e/outside/secret.txt", 404),          # decoded once only: a folder named "%2e%2e"
    ("..\\outside\\secret.txt", 404),                # a backslash is a file-name character here
    ("lenet5.cnn%00.txt", 400), ("", 400), ("sub", 404), ("missing.cnn", 404),
])
def test_no_file_outside_the_folder_is_read(site, query, status):
    query = query.format(outside=site["outside"], outside_rel=str(site["outside"]).lstrip("/"))
    got, body, _ = get(site, "/api/file?path=" + query)
    assert got == status, body
    assert b"the secret" not in body and b"secret(c)" not in body


def test_only_cnn_files_are_read(site):
    """Inside the folder too, only .cnn files are served (README: "reads and writes only `.cnn`
    files"): not notes, keys or a repository's config, nor through a link named .cnn."""
    root = site["root"]
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("the secret")
    (root / "notes.txt").write_text("the secret")
    os.symlink(root / "notes.txt", root / "alias.cnn")
    try:
        for query in ("notes.txt", ".git/config", "alias.cnn"):
            got, body, _ = get(site, "/api/file?path=" + query)
            assert got == 403 and b"the secret" not in body, (query, got, body)
        status, body, _ = get(site, "/api/files")
        assert "alias.cnn" not in json.loads(body)["files"]
    finally:
        (root / "alias.cnn").unlink()
        (root / "notes.txt").unlink()
        (root / ".git" / "config").unlink()
        (root / ".git").rmdir()


def test_raw_paths_outside_the_api_are_not_served(site):
    for path in ("/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/lenet5.cnn", "/out/secret.txt",
                 "//etc/passwd"):
        status, body, _ = get(site, path)
        assert status == 404 and b"the secret" not in body, path
    connection = http.client.HTTPConnection("127.0.0.1", site["port"], timeout=30)
    connection.request("GET", "/api/file?path=../outside/secret.txt")          # not normalised by a client
    reply = connection.getresponse()
    assert reply.status == 403 and b"the secret" not in reply.read()
    connection.close()


def test_analyse(site):
    status, reply = post(site, "/api/analyse", {"path": "lenet5.cnn", "text": LENET})
    assert status == 200 and reply["ok"] and reply["data"]["totals"]["params"] == 61706
    assert (reply["svg"] or "").startswith("<svg") or reply["note"]
    text = LENET.replace("conv(16, 5x5)", "conv(16, 5x5, strid=2)")
    status, reply = post(site, "/api/analyse", {"path": "lenet5.cnn", "text": text})
    assert status == 200 and not reply["ok"]
    error = reply["error"]
    line = text.split("\n").index(next(s for s in text.split("\n") if "strid=" in s)) + 1
    assert (error["file"], error["line"], error["col"]) == ("lenet5.cnn", line, text.split("\n")[line - 1].index("strid") + 1)
    assert "stride" in (error["hint"] or "") and error["rendered"].startswith(f"lenet5.cnn:{line}:")
    status, reply = post(site, "/api/analyse", {"path": "sub/uses.cnn", "text": (site["root"] / "sub" / "uses.cnn").read_text()})
    assert reply["ok"] and reply["data"]["blocks"]["cbr1"]["type"] == "cbr"       # imports inside the folder
    status, reply = post(site, "/api/analyse", {"text": "network N {\n input x: 4\n dense(2)\n}\n"})
    assert reply["ok"] and reply["data"]["network"] == "N"                         # untitled text


def test_analyse_a_chosen_network(site):
    text = "network A {\n input x: 4\n dense(2)\n}\nnetwork B {\n input x: 4\n dense(3)\n}\n"
    status, reply = post(site, "/api/analyse", {"text": text, "network": "B"})
    assert status == 200 and reply["ok"] and reply["data"]["network"] == "B" and reply["data"]["totals"]["params"] == 15
    status, reply = post(site, "/api/analyse", {"text": text, "network": "C"})
    assert status == 200 and not reply["ok"] and "C" in reply["error"]["message"]
    status, reply = post(site, "/api/analyse", {"text": text, "network": 3})
    assert status == 400


@pytest.mark.parametrize("target", ["../outside/secret.cnn", "{outside}/secret.cnn", "link.cnn", "out/secret.cnn"])
def test_imports_cannot_leave_the_folder(site, target):
    target = target.format(outside=site["outside"])
    text = f'import "{target}"\nnetwork N {{\n    input x: 3x8x8\n    secret(4)\n}}\n'
    status, reply = post(site, "/api/analyse", {"path": "n.cnn", "text": text})
    assert status == 200 and not reply["ok"]
    assert reply["error"]["line"] == 1 and "is outside the folder being served" in reply["error"]["message"]
    status, reply = post(site, "/api/analyse", {"path": "../outside/n.cnn", "text": "network N {\n input x: 4\n}\n"})
    assert status == 403                                  # nor may the text claim to live outside


def test_save(site):
    text = LENET.replace("LeNet5", "Saved")
    status, reply = post(site, "/api/save", {"path": "sub/saved.cnn", "text": text})
    assert status == 200 and reply["ok"] and (site["root"] / "sub" / "saved.cnn").read_text() == text
    assert "sub/saved.cnn" in json.loads(get(site, "/api/files")[1])["files"]
    for path, code in [("../outside/x.cnn", 403), (f"{site['outside']}/x.cnn", 403), ("out/x.cnn", 403),
                       ("link.cnn", 403), ("notes.txt", 403), ("nofolder/x.cnn", 404)]:
        status, reply = post(site, "/api/save", {"path": path, "text": "x"})
        assert status == code, (path, reply)
    assert (site["outside"] / "secret.cnn").read_text().startswith("block secret")
    assert sorted(p.name for p in site["outside"].iterdir()) == ["secret.cnn", "secret.txt"]


def test_requests_that_are_refused(site):
    assert post(site, "/api/analyse", {"text": LENET}, headers={"X-Cnnspec": ""})[0] == 403       # CSRF guard
    assert post(site, "/api/analyse", {"text": LENET}, headers={"Content-Type": "text/plain"})[0] == 415
    assert post(site, "/api/analyse", None, raw=b"{not json")[0] == 400
    assert post(site, "/api/analyse", None, raw=b"[1, 2]")[0] == 400
    assert post(site, "/api/analyse", {"text": 3})[0] == 400
    assert post(site, "/api/nothing", {})[0] == 404
    status, reply = post(site, "/api/analyse", None, raw=b" " * (MAX_BODY + 1))
    assert status == 413 and "limited to" in reply["error"]["message"]
    assert get(site, "/api/files", headers={"Host": "evil.example:80"})[0] == 403             # DNS rebinding
    assert get(site, "/api/file?path=lenet5.cnn", headers={"Host": f"attacker.test:{site['port']}"})[0] == 403
    assert get(site, "/api/files", headers={"Host": f"localhost:{site['port']}"})[0] == 200
    status, reply = post(site, "/api/analyse", {"text": "network N {\n" + "(" * 5000 + "\n}"})
    assert status == 200 and not reply["ok"]                                                  # nesting, located
    assert get(site, "/api/files")[0] == 200                                                  # still serving


def test_server_errors():
    with pytest.raises(CnnSpecError, match="is outside the served folder"):
        make_server(SPECS, SPECS.parent / "README.md", port=0)
    with pytest.raises(CnnSpecError, match="no such file"):
        make_server(SPECS, SPECS / "missing.cnn", port=0)
    with pytest.raises(CnnSpecError, match="is not a folder"):
        make_server(SPECS / "lenet5.cnn", port=0)


def test_serve_command(tmp_path):
    """`cnnspec serve FILE --port 0` in its own process: prints its address, serves the folder it
    was started in, stops on Ctrl-C (SIGINT) with status 0."""
    import re
    import signal
    import subprocess
    import sys

    (tmp_path / "net.cnn").write_text(LENET)
    process = subprocess.Popen([sys.executable, "-m", "cnnspec", "serve", "net.cnn", "--port", "0"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        found = re.match(r"serving (.+) at (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C stops\)", line)
        assert found, line + process.stderr.read() if process.poll() is not None else line
        site = {"base": found.group(2).rstrip("/"), "port": int(found.group(3))}
        status, body, _ = get(site, "/api/files")
        assert status == 200 and json.loads(body)["files"] == ["net.cnn"]
        assert json.loads(get(site, "/")[1].decode().split('id="cnnspec-data">')[1].split("</script>")[0])["open"] == "net.cnn"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        process.stdout.close()
        process.stderr.close()
