"""The report and the editor in a real browser: Debian's Chromium, headless, driven by Selenium
through /usr/bin/chromedriver (nothing downloaded). Skips only when Chromium or its driver is not
installed (`apt-get install chromium chromium-driver`).

The report test's screenshot is the picture in the README: with CNNSPEC_PICTURES=DIR set, the test
also writes it there (`CNNSPEC_PICTURES=specs/pictures pytest tests/test_report_browser.py`).
"""
import math
import os
import shutil
import tempfile
import threading
import time

import pytest

import cnnspec
from cnnspec.report import report_data, write_report
from conftest import SPECS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
if shutil.which("dot") is None:
    pytestmark = [pytestmark, pytest.mark.skip(reason="graphviz's dot is not installed: the page has no drawing")]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cnnspec-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
                 "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def problems(driver) -> list:
    """Console messages of level SEVERE (errors, failed loads, CSP violations) since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def box_text(field, unit, dims):
    """'a..b x c..d': the input region of ``unit``, from the analysis (size, jump, padding)."""
    parts = []
    for axis, n in enumerate(dims):
        lo = unit[axis] * field["stride"][axis] - field["padding"][axis]
        hi = lo + field["size"][axis] - 1
        parts.append(f"{max(lo, 0)}..{min(hi, n - 1)}")
    return " x ".join(parts)


def click(driver, element):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).click().perform()


def test_report_in_a_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By

    network = cnnspec.load(SPECS / "resnet18.cnn")
    data = report_data(network)
    path = write_report(network, tmp_path / "resnet18.html")
    problems(browser)
    browser.get("file://" + os.path.abspath(path))
    wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    assert problems(browser) == []
    assert browser.title == "ResNet18 — cnnspec"
    layers = browser.find_elements(By.CSS_SELECTOR, "#summary tbody tr.layer")
    assert [row.get_attribute("data-name") for row in layers] == [layer["name"] for layer in data["layers"]]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#summary tbody tr.block")) == len(data["blocks"])
    nodes = browser.find_elements(By.CSS_SELECTOR, "#drawing svg g.node")
    assert len(nodes) == len(data["layers"])

    # a click on a layer of the drawing shows its details and its field on the input grid
    target = next(n for n in nodes if n.find_element(By.TAG_NAME, "title").get_attribute("textContent") == "basic1.conv2")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    click(browser, target.find_element(By.CSS_SELECTOR, "path, polygon"))
    details = browser.find_element(By.ID, "details")
    wait(browser, lambda d: "basic1.conv2" in details.text)
    layer = next(x for x in data["layers"] if x["name"] == "basic1.conv2")
    field = layer["receptive_field"]
    text = details.text
    assert "conv(64, 3x3, pad=1, bias=false)" in text and "36,864" in text and "115,605,504" in text
    assert f"{field['size'][0]}x{field['size'][1]}, jump 4x4, padding {field['padding'][0]}x{field['padding'][1]}" in text
    assert f"sees {box_text(field, (27, 27), (224, 224))}" in text          # the centre unit of 56x56
    assert "selected" in target.get_attribute("class")
    assert browser.find_element(By.CSS_SELECTOR, '#summary tr.selected').get_attribute("data-name") == "basic1.conv2"

    # another unit: the top-left one, whose field reaches into the padding
    grid = details.find_element(By.CSS_SELECTOR, "svg.grid.clickable")
    cell = float(grid.get_attribute("data-cell"))
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(browser).move_to_element_with_offset(grid, -grid.size["width"] / 2 + cell / 2,
                                                      -grid.size["height"] / 2 + cell / 2).click().perform()
    wait(browser, lambda d: "unit 0,0" in details.text)
    assert f"sees {box_text(field, (0, 0), (224, 224))} (" in details.text and "with the padding" in details.text

    # fold a block: its layers leave the drawing and the table, the drawing gets shorter
    height = float(browser.find_element(By.CSS_SELECTOR, "#drawing svg").get_attribute("height").rstrip("pt"))
    toggle = browser.find_element(By.XPATH, "//*[local-name()='g'][contains(@class,'cluster')]"
                                            "[*[local-name()='title' and text()='cluster_basic1']]"
                                            "//*[local-name()='g'][contains(@class,'fold-toggle')]")
    click(browser, toggle)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'g.folded[data-block="basic1"]'))
    assert not target.is_displayed()
    folded = float(browser.find_element(By.CSS_SELECTOR, "#drawing svg").get_attribute("height").rstrip("pt"))
    assert folded < height - 200
    rows = browser.find_elements(By.CSS_SELECTOR, '#summary tr.layer[data-name^="basic1."]')
    assert rows and not any(r.is_displayed() for r in rows)
    assert "basic1: basic(64)" in browser.find_element(By.CSS_SELECTOR, 'g.folded[data-block="basic1"]').text
    assert "selected" in browser.find_element(By.CSS_SELECTOR, 'g.folded[data-block="basic1"]').get_attribute("class")
    click(browser, browser.find_element(By.CSS_SELECTOR, 'g.folded[data-block="basic1"] g.fold-toggle'))
    wait(browser, lambda d: target.is_displayed())
    again = float(browser.find_element(By.CSS_SELECTOR, "#drawing svg").get_attribute("height").rstrip("pt"))
    assert math.isclose(again, height)

    # the picture for the README: down1 folded, a layer of basic2 selected
    browser.execute_script(
        "cnnspec.fold('down1'); cnnspec.select('basic2.conv1'); document.getElementById('zoom-out').click();"
        "var pane = document.getElementById('drawing-pane'), node = document.querySelector('#drawing g.node.selected');"
        "pane.scrollTop += node.getBoundingClientRect().top - pane.getBoundingClientRect().top - 120;"
        "window.scrollTo(0, 0); document.getElementById('details').scrollTop = 0;")
    time.sleep(0.3)
    assert problems(browser) == []
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    folder = os.environ.get("CNNSPEC_PICTURES")
    if folder:
        shutil.copy(shot, os.path.join(folder, "report-resnet18.png"))


def test_editor_in_a_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from cnnspec.report.server import make_server

    text = (SPECS / "lenet5.cnn").read_text()
    (tmp_path / "lenet5.cnn").write_text(text)
    server = make_server(tmp_path, tmp_path / "lenet5.cnn", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        problems(browser)
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        wait(browser, lambda d: d.execute_script("return document.body.dataset.analysed"))
        rows = lambda d: len(d.find_elements(By.CSS_SELECTOR, "#summary tr.layer"))   # noqa: E731
        assert rows(browser) == 14 and len(browser.find_elements(By.CSS_SELECTOR, "#drawing svg g.node")) == 14
        errors = browser.find_element(By.ID, "errors")
        assert errors.text.startswith("ok: LeNet5, 13 layers, 61,706 params")

        # a mistake: marked at its line and column, the drawing kept but greyed
        source = browser.find_element(By.ID, "source")
        line = text.split("\n").index(next(s for s in text.split("\n") if "dense(84)" in s))
        col = text.split("\n")[line].index("dense(84)")
        offset = text.index("dense(84)")
        browser.execute_script("arguments[0].focus(); arguments[0].setSelectionRange(arguments[1], arguments[1] + 5)",
                               source, offset)
        source.send_keys("dnse")
        wait(browser, lambda d: "bad" in errors.get_attribute("class"))
        assert errors.text.startswith(f"lenet5.cnn:{line + 1}:{col + 1}: error: unknown layer or block `dnse`")
        assert "did you mean `dense`?" in errors.text
        mark = browser.find_element(By.CSS_SELECTOR, "#highlight .error-mark")
        before = browser.execute_script(
            "var r = document.createRange(); r.setStart(document.getElementById('highlight'), 0);"
            "r.setEndBefore(arguments[0]); return r.toString();", mark)
        assert mark.text == "dnse" and before.count("\n") == line and len(before.split("\n")[-1]) == col
        assert browser.find_element(By.CSS_SELECTOR, "#gutter .bad").text == str(line + 1)
        assert "stale" in browser.find_element(By.ID, "drawing").get_attribute("class")

        # fixed, with one more layer: the table and the drawing follow
        browser.execute_script("arguments[0].setSelectionRange(arguments[1], arguments[1] + 4)", source, offset)
        source.send_keys("dense")
        source.send_keys(Keys.END, " -> dropout(0.5)")
        wait(browser, lambda d: rows(d) == 15)
        assert "bad" not in errors.get_attribute("class")
        assert "dropout1" in [r.get_attribute("data-name") for r in browser.find_elements(By.CSS_SELECTOR, "#summary tr.layer")]
        assert len(browser.find_elements(By.CSS_SELECTOR, "#drawing svg g.node")) == 15
        assert "stale" not in browser.find_element(By.ID, "drawing").get_attribute("class")

        source.send_keys(Keys.CONTROL, "s")
        wait(browser, lambda d: "dropout(0.5)" in (tmp_path / "lenet5.cnn").read_text())
        assert problems(browser) == []
    finally:
        server.shutdown()
        server.server_close()
