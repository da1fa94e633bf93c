"""python -m benchmark.testing.browser PAGE.html [--screenshot PNG]

A report page in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`
packages) driven through Selenium loads the page from disk and reports what a reader would meet:
console errors (an image that did not load is one), images that did not decode, the flipped-image
figures and crops shown, and the chart's intervals read back from where they are drawn (through
the axis' tick labels, not the values the marks carry). The report's tests and the results'
make.sh scripts both use it; the latter keep its screenshot."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1300, 1800)  # the screenshot's size: the page's top (tables, chart, the first flips)

READ_PAGE = """
const drawn = (el, attr) => parseFloat(el.getAttribute(attr));
const ticks = [...document.querySelectorAll('svg.forest g.tick')].map(
    g => [drawn(g.querySelector('line'), 'x1'), parseFloat(g.querySelector('text').textContent)]);
let toValue = null;
if (ticks.length >= 2) {
  const [[x0, v0], [x1, v1]] = [ticks[0], ticks[ticks.length - 1]];
  toValue = x => v0 + (x - x0) * (v1 - v0) / (x1 - x0);
}
return {
  title: document.title,
  broken_images: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
  flips: document.querySelectorAll('figure.flip').length,
  crops: [...document.querySelectorAll('figure.flip img.crop')].filter(i => i.naturalWidth > 0).length,
  near_ties: document.querySelectorAll('figure.flip.near-tie').length,
  notes: [...document.querySelectorAll('.note')].map(n => n.textContent),
  chart: [...document.querySelectorAll('svg.forest g.pair')].map(g => ({
    run: g.dataset.run,
    difference: toValue(drawn(g.querySelector('circle'), 'cx')),
    low: toValue(drawn(g.querySelector('line.interval'), 'x1')),
    high: toValue(drawn(g.querySelector('line.interval'), 'x2')),
    pixel: toValue(1) - toValue(0)})),
};
"""


def missing() -> str | None:
    """Why no page can be opened here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e \".[test]\")"
    if browser() is None:
        return "no Chromium (Debian: apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver (Debian: apt-get install chromium-driver)"
    return None


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@contextmanager
def opened(page: Path):
    """Chromium showing `page`, headless, with the console's messages kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    why = missing()
    if why:
        raise RuntimeError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = browser()
    # no sandbox: CI and containers run as root, where Chromium's sandbox cannot start
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:  # the viewport itself WINDOW (the window's size includes what headless Chromium keeps of its frame)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": WINDOW[0], "height": WINDOW[1],
                                                                       "deviceScaleFactor": 1, "mobile": False})
        driver.get(Path(page).resolve().as_uri())
        yield driver
    finally:
        driver.quit()


def inspect(page: Path, screenshot: Path | None = None) -> dict:
    """What the browser shows of `page` (READ_PAGE), its console errors, and a screenshot."""
    with opened(page) as driver:
        seen = driver.execute_script(READ_PAGE)
        seen["console_errors"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            if not driver.save_screenshot(str(screenshot)):
                raise RuntimeError(f"{screenshot}: the browser wrote no screenshot")
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.testing.browser", description=__doc__.split("\n\n")[1])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, help="write the page's top as this PNG")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: {args.page}: no such page", file=sys.stderr)
        return 2
    if why := missing():
        print(f"error: {why}", file=sys.stderr)
        return 2
    seen = inspect(args.page, args.screenshot)
    print(json.dumps({k: seen[k] for k in ("title", "flips", "crops", "near_ties", "console_errors",
                                           "broken_images")}, indent=1))
    return 1 if seen["console_errors"] or seen["broken_images"] else 0


if __name__ == "__main__":
    sys.exit(main())
