"""Headless Chromium for the page tests: where it is, how it starts, screenshots, and asking on the page.
The `browser` and `page` fixtures (tests/conftest.py) use it; each browser test module gives its own `base_url`."""

from pathlib import Path

from playwright.sync_api import Page

from service.config import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def csp_violations(messages: list[str]) -> list[str]:
    """Console messages in which Chromium reports a Content-Security-Policy violation."""
    return [text for text in messages if "Content Security Policy" in text]


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def ask(page: Page, question: str) -> None:
    page.fill("#q", question)
    page.press("#q", "Enter")
    page.wait_for_selector("#status:not(:has(.spinner))", timeout=20_000)
