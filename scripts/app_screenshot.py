"""Screenshots of ``centrifuge app`` after a separation (the README's docs/img/app.png and app-narrow.png).

Starts ``centrifuge app`` with the packaged model, clicks the example of a shipped clip in headless Chromium
(Debian's ``chromium`` and ``chromium-driver``), separates it, waits for the layers and saves the page once
per window width:

    python scripts/app_screenshot.py docs/img/app.png docs/img/app-narrow.png [--clip carphone.mp4]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

STATUS = "#status [data-testid='markdown']"


def _browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _until(browser: webdriver.Chrome, script: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not browser.execute_script(script):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for: {script}")
        time.sleep(0.5)


def shoot(url: str, clip: str, out: str, width: int, height: int) -> None:
    """Separate ``clip`` (picked among the examples) in a ``width`` x ``height`` window and save the page."""
    browser = _browser(width, height)
    browser.set_window_size(width, height)  # Chromium's --window-size has a minimum width of 500
    try:
        browser.get(url)
        _until(browser, "return document.querySelectorAll('#examples button').length > 0")
        index = browser.execute_script(
            "return [...document.querySelectorAll('#examples button')].findIndex(b => "
            f"(b.querySelector('video') || {{}}).src?.endsWith('{clip}'))")
        browser.find_elements(By.CSS_SELECTOR, "#examples button")[max(index, 0)].click()
        _until(browser, f"const v = document.querySelector('#input video'); return v && v.src.endsWith('{clip}')")
        browser.find_element(By.CSS_SELECTOR, "#separate").click()
        _until(browser, "const s = document.querySelector(\"" + STATUS.replace('"', '\\"') + "\"); "
                        "return s && /^(Done|Error)/.test(s.innerText)")
        print(browser.find_element(By.CSS_SELECTOR, STATUS).text)
        # let the players load a frame and start looping
        browser.execute_script("document.querySelectorAll('video').forEach(v => { v.muted = true; v.play(); })")
        time.sleep(3)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(out)
        print(f"wrote {out}")
    finally:
        browser.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wide", help="PNG file for the 1400 px wide window")
    parser.add_argument("narrow", help="PNG file for the 420 px wide window")
    parser.add_argument("--clip", default="carphone.mp4", help="shipped clip to separate")
    parser.add_argument("--port", type=int, default=7871)
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, "-m", "centrifuge", "app", "--port", str(args.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[2]  # "centrifuge app: URL (Ctrl-C to stop)"
        shoot(url, args.clip, args.wide, 1400, 2300)
        shoot(url, args.clip, args.narrow, 420, 3000)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
