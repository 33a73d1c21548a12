"""The scene explorer page (GET / of `larr serve`) in a real browser: Playwright + Debian's chromium
against a real `larr serve` subprocess on 127.0.0.1. Skips where either is missing.

``LARR_UPDATE_SCREENSHOT=1`` also writes docs/serve_explorer.png (the README's picture)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from serve_helpers import copy_store, serve_run, start_server, stop_process

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install 'larr[test]')")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("chromium not installed (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).parents[1] / "docs" / "serve_explorer.png"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return serve_run(tmp_path_factory)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _server(run, tmp, env=None):
    return start_server(run, copy_store(run, tmp / "larr"), env=env)


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    proc, base = _server(run, tmp_path_factory.mktemp("explorer"))
    yield base
    stop_process(proc, 15)


def _rows(page) -> list[tuple[str, str]]:
    return [(r.get_attribute("data-shop"), r.query_selector("td.score").inner_text())
            for r in page.query_selector_all("#results tbody tr")]


def _loaded(page) -> None:
    page.wait_for_selector("#results tbody tr", timeout=30_000)


def test_page_loads_and_ranks(browser, server):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    _loaded(page)
    n = httpx.get(f"{server}/v1/shops", timeout=10).json()["total"]
    assert len(page.query_selector_all("#results tbody tr")) == n > 0
    assert page.query_selector_all("#users li") and page.query_selector("#feature-weather input")
    assert "larr_seed0@" in page.inner_text("#model")
    page.fill("#user-q", "1")  # search by id
    page.wait_for_selector('#users li[data-user="1"]')
    assert not errors
    page.close()


def test_never_seen_weather_changes_ranking_and_shows_neighbours(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server)
    _loaded(page)
    before = _rows(page)
    page.fill("#feature-weather input", "volcanic ash")
    page.dispatch_event("#feature-weather input", "change")
    nb = page.wait_for_selector('.nb[data-feature="weather"][data-source="cache"]', timeout=30_000)
    assert len(nb.query_selector_all("li")) == 5 and "nearest known values" in nb.inner_text()
    page.wait_for_function("document.querySelectorAll('#results tbody tr td:nth-child(2) .up, "
                           "#results tbody tr td:nth-child(2) .down').length > 0", timeout=10_000)
    after = _rows(page)
    assert after != before and sorted(s for s, _ in after) == sorted(s for s, _ in before)
    if os.environ.get("LARR_UPDATE_SCREENSHOT"):
        page.screenshot(path=str(SCREENSHOT), full_page=False)
    page.close()


def test_page_is_usable_at_phone_width(browser, server):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server)
    _loaded(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    page.close()


def test_api_key_server_works_from_the_page(browser, run, tmp_path):
    proc, base = _server(run, tmp_path, env={"LARR_API_KEY": "s3cret"})
    try:
        assert httpx.get(f"{base}/v1/scene-features", timeout=5).status_code == 401
        page = browser.new_page()
        page.goto(base)
        page.wait_for_selector("#status.error")
        assert "401" in page.inner_text("#status") and "API key" in page.inner_text("#status")
        page.fill("#api-key", "s3cret")
        page.click("#save-key")
        page.wait_for_selector("#results tbody tr", timeout=30_000)
        assert page.evaluate("localStorage.getItem('larr.apiKey')") == "s3cret"
        page.reload()  # the key stays in the page
        page.wait_for_selector("#results tbody tr", timeout=30_000)
        page.close()
    finally:
        stop_process(proc, 15)
