"""The page in a real browser: `rag serve` in a subprocess (fake-hash index, scripted tiny LLM reader) and
headless Chromium driven by selenium with Debian's chromedriver (nothing is downloaded).

.ci/run installs Debian's chromium and chromium-driver when they are missing, so on CI (CI set) a missing
browser fails these tests; elsewhere it skips them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import INJECTED, serve_index

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TESTS = Path(__file__).resolve().parent


if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    why = "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests {why}; .ci/run installs them", pytrace=False)
    pytest.skip(why, allow_module_level=True)


@pytest.fixture
def server(tmp_path):
    """`rag serve` over the SERVE_DOCS index on a free port; yields its URL."""
    _, index = serve_index(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "RAG_FAKE_DELAY": "0.05"}
    env.pop("RAG_TOKEN", None)
    code = "import fakes; fakes.rag_main_with_fakes()"
    cmd = [sys.executable, "-c", code, "serve", "--index", str(index), "--port", "0"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url, seen = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
            url = m and m[1]
        assert url, f"rag serve did not start: {''.join(seen)}"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # a full pipe would block it
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must not look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_ask_stream_cite_and_show_the_passage_as_text(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server)
    assert browser.switch_to.active_element.get_attribute("id") == "question"  # focus starts in the box
    browser.switch_to.active_element.send_keys("Which team won Super Bowl 50?", Keys.ENTER)  # keyboard only

    answer = browser.find_element(By.ID, "answer")
    wait.until(lambda d: answer.get_attribute("data-state") == "done")
    assert answer.text == "Denver Broncos [1]"
    assert int(answer.get_attribute("data-pieces")) > 1  # it arrived in pieces, as they were generated
    meta = browser.find_element(By.ID, "meta").text
    assert "reader: tiny (no adapter)" in meta and "first token" in meta and "total" in meta
    assert not browser.find_element(By.ID, "not-found").is_displayed()

    link = answer.find_element(By.CSS_SELECTOR, "a.cite")
    link.send_keys(Keys.ENTER)  # a citation opens from the keyboard too
    passage = browser.find_element(By.ID, "passage")
    wait.until(lambda d: passage.is_displayed())
    assert browser.switch_to.active_element == passage
    assert browser.find_element(By.ID, "passage-source").text.startswith("super_bowl_50.txt, characters 0-")
    text = browser.find_element(By.ID, "passage-text")
    assert text.find_element(By.TAG_NAME, "mark").text == "Denver Broncos"  # the answer, highlighted
    assert INJECTED in text.text  # the document's markup is shown as text...
    assert text.find_elements(By.CSS_SELECTOR, "script, img") == []  # ...never made into elements
    time.sleep(0.3)  # an onerror handler would have fired by now
    assert browser.execute_script("return window.pwned") is None

    passage.send_keys(Keys.ESCAPE)
    wait.until(lambda d: not passage.is_displayed())
    assert browser.switch_to.active_element == link  # focus returns to the citation


def test_not_in_the_documents_is_its_own_state(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    browser.find_element(By.ID, "question").send_keys("What is the boiling point of mercury?", Keys.ENTER)
    answer = browser.find_element(By.ID, "answer")
    WebDriverWait(browser, 30).until(lambda d: answer.get_attribute("data-state") == "not-found")
    assert browser.find_element(By.ID, "not-found").is_displayed()
    assert "Not in the documents" in browser.find_element(By.ID, "not-found").text
    assert answer.text == ""  # the abstention is not shown as if it were an answer
    assert browser.find_elements(By.CSS_SELECTOR, "#citations li") == []
