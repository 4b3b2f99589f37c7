"""The stack's two UIs in a real browser: Playwright driving Debian's Chromium (no browser download), logged in as a
person would be. Used by tests/ui and scripts/screenshots.py.

    with chromium_browser() as browser:
        page = prefect_page(browser, stack.prefect_ui_url, auth_string)     # past the Prefect UI's login form
        page = mlflow_page(browser, user, password)                          # the MLflow server's basic auth

The Prefect UI asks for its API auth string on a login page (it keeps it in the browser's local storage); the
MLflow server's basic-auth app answers 401 with a `Basic` challenge, which a browser turns into its login prompt.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from ops.stack.processes import apt_install
from slmops.errors import SlmopsError

VIEWPORT = {"width": 1600, "height": 1000}


def ensure_chromium() -> str:
    """Debian's chromium, installed with apt-get first when it is missing and we are root."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        raise SlmopsError("chromium is not installed and this is not root: install it (Debian: sudo apt-get install "
                          "-y chromium)")
    apt_install("chromium", "chromium")
    found = shutil.which("chromium")
    if not found:
        raise SlmopsError("apt-get installed chromium, but no chromium is on PATH")
    return found


@contextmanager
def chromium_browser() -> Iterator:
    """A headless Chromium under Playwright, closed (with its processes) on exit."""
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root, which this machine's CI is
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def prefect_page(browser, ui_url: str, auth_string: str | None, timeout_s: float = 60):
    """A new page of the Prefect UI, logged in through its login form with the API auth string (None: not logged
    in). Raises SlmopsError when the UI does not let the string in."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(timeout_s * 1000)
    if auth_string is None:
        return page
    page.goto(f"{ui_url}/login")
    page.get_by_placeholder("admin:pass").fill(auth_string)
    page.get_by_role("button", name="Login").click()
    try:
        page.wait_for_url("**/dashboard", timeout=timeout_s * 1000)
    except Exception as err:  # Playwright's TimeoutError
        raise SlmopsError(f"the Prefect UI at {ui_url} did not accept the auth string: still at {page.url}") from err
    return page


def mlflow_page(browser, user: str | None, password: str | None, timeout_s: float = 60):
    """A new page whose requests answer the MLflow server's basic-auth challenge as this user (None: they do
    not)."""
    credentials = {"username": user, "password": password} if user else None
    page = browser.new_context(viewport=VIEWPORT, http_credentials=credentials).new_page()
    page.set_default_timeout(timeout_s * 1000)
    return page


# MLflow's compare page shows the run details as a plain table, and the parameters and metrics each as a pair of
# virtualized grids: the labels, and a column of cells per run, the same row at the same height; only the rows
# scrolled into view exist
_COMPARE_ROW = """label => {
    const th = [...document.querySelectorAll('th, td')].find(c => c.innerText.trim() === label);
    if (th) return [...th.closest('tr').children].filter(c => c !== th).map(c => c.innerText.trim());
    const grids = [...document.querySelectorAll('.ReactVirtualized__Grid[role=grid]')];  // labels, then values
    const cellsOf = g => [...g.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > *')];
    let drawn = null;
    for (const grid of grids) {
        const hit = cellsOf(grid).find(c => c.innerText.trim() === label);
        if (!hit) continue;
        let box = grid.parentElement;
        while (box && box.querySelectorAll('.ReactVirtualized__Grid[role=grid]').length < 2) box = box.parentElement;
        const cells = box ? [...box.querySelectorAll('.ReactVirtualized__Grid[role=grid]')].filter(g => g !== grid)
            .flatMap(cellsOf).filter(c => c.style.top === hit.style.top) : [];
        cells.sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left));
        if (cells.length) return cells.map(c => c.innerText.trim());
        drawn = [];  // the label's row drawn, its values' not yet
    }
    return drawn;
}"""
# only the grids a person can scroll (the values; their labels' grid has overflow hidden and follows them): setting
# scrollTop on both made them fight, MLflow syncing one from the other, and drift apart
_SCROLL_GRIDS = ("top => { for (const g of document.querySelectorAll('.ReactVirtualized__Grid[role=grid]')) "
                 "if (getComputedStyle(g).overflowY !== 'hidden') g.scrollTop = top; }")


def mlflow_compare_row(page, label: str, step_px: int = 200, max_px: int = 20000) -> list[str] | None:
    """The cells MLflow's compare-runs page shows for one metric or parameter, a run per cell (as the page shows
    them), found by scrolling its tables as a person would; None if no row has that label."""
    seen = False
    for top in range(0, max_px, step_px):
        page.evaluate(_SCROLL_GRIDS, top)
        for _ in range(20):  # the label's row drawn, its values' not yet: wait for them (up to 2 s), then scroll on
            page.wait_for_timeout(100)
            cells = page.evaluate(_COMPARE_ROW, label)
            if cells:
                return cells
            if cells is None:
                break
            seen = True
    return [] if seen else None
