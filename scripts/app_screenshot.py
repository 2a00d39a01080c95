"""Screenshot of ``centrifuge app`` after a separation (the README's docs/img/app.png).

Starts ``centrifuge app`` with the packaged model, uploads a shipped clip in headless Chromium (Debian's
``chromium`` and ``chromium-driver``), waits for the layers and saves the page:

    python scripts/app_screenshot.py docs/img/app.png [--clip carphone.mp4] [--port 7871]
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

from centrifuge.demo import asset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--clip", default="carphone.mp4", help="shipped clip to separate")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--size", default="1280,1750", help="window width,height in pixels")
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, "-m", "centrifuge", "app", "--port", str(args.port)],
                              stdout=subprocess.PIPE, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.size}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        url = server.stdout.readline().split()[2]  # "centrifuge app: URL (Ctrl-C to stop)"
        browser.get(url)
        time.sleep(2)
        browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(asset(args.clip)))
        time.sleep(2)
        browser.find_element(By.CSS_SELECTOR, "#separate").click()
        status = "#status [data-testid='markdown']"
        for _ in range(600):
            text = browser.find_element(By.CSS_SELECTOR, status).text
            if text:
                break
            time.sleep(0.5)
        print(text)
        # let the players load a frame and start looping
        browser.execute_script("document.querySelectorAll('video').forEach(v => { v.muted = true; v.play(); })")
        time.sleep(3)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        browser.quit()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
