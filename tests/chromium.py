"""How the browser tests and `scripts/screenshots.py` start Debian's Chromium.

Playwright cannot download browsers here; these flags keep Chromium off the network
(see ../shared/TESTING-NOTES.md).
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
