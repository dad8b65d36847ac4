"""Screenshots of the card and the system settings for the docs, from a throwaway demo.

    .venv/bin/python scripts/screenshots.py

Builds a fresh SQLite database in a temporary directory, migrates it, runs `seed_demo`,
starts `runserver` on a free loopback port and drives Debian's Chromium through Playwright.
Writes, at 1280 px width:

    docs/img/card-smtp.png        SMTP's card, SMTP chosen, smtp.gmail.com:587 with SSL refused
    docs/img/card-reply-to.png    REPLY's card (Directo-Reply-to)
    docs/img/system-settings.png  the system settings, as ADMIN
    docs/img/card-domain.png      ANNA's card (Default) with the domain check of demo.example,
                                  whose DNS (a local dnslib server) says Google MX, SPF without
                                  the platform and DMARC quarantine

Nothing outside the temporary directory and docs/img/ is touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
from tests.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (needs BASE_DIR on the path)

OUT_DIR = BASE_DIR / "docs" / "img"
WIDTH = 1280
DEMO_PASSWORD = "demo"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare_database(env: dict[str, str]) -> None:
    """Migrate and seed the throwaway database, in this process."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_demo", password=DEMO_PASSWORD)


def _wait_until_up(url: str, server: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runserver exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise SystemExit(f"runserver did not answer at {url} within {timeout:.0f} s")


def _login(browser, base_url: str, code: str):
    context = browser.new_context(
        locale="en-US", viewport={"width": WIDTH, "height": 800}, device_scale_factor=1
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", code)
    page.fill("#id_password", DEMO_PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit].primary")
    if "/accounts/login/" in page.url:
        raise SystemExit(f"could not log in as {code}")
    return context, page


def _shoot(page, name: str) -> None:
    path = OUT_DIR / name
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path.relative_to(BASE_DIR)}")


def _take_screenshots(base_url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # SMTP's own server, with a port and security that do not go together.
            context, page = _login(browser, base_url, "SMTP")
            page.goto(f"{base_url}/accounts/card/")
            form = page.locator("form.card-form")
            form.locator('select[name="mode"]').select_option("smtp")
            form.locator('input[name="server"]').fill("smtp.gmail.com:587")
            form.locator('select[name="security"]').select_option("ssl")
            with page.expect_navigation():
                form.locator("button[type=submit].primary").click()
            if not page.locator(".field.has-error").count():
                raise SystemExit("the card accepted smtp.gmail.com:587 with SSL")
            _shoot(page, "card-smtp.png")
            context.close()

            context, page = _login(browser, base_url, "REPLY")
            page.goto(f"{base_url}/accounts/card/")
            _shoot(page, "card-reply-to.png")
            context.close()

            context, page = _login(browser, base_url, "ADMIN")
            page.goto(f"{base_url}/settings/system/")
            _shoot(page, "system-settings.png")
            context.close()

            context, page = _login(browser, base_url, "ANNA")
            page.goto(f"{base_url}/accounts/card/")
            if not page.locator("section.domain-check").count():
                raise SystemExit("the card shows no domain check")
            _shoot(page, "card-domain.png")
            context.close()
        finally:
            browser.close()


DEMO_ZONE = """
demo.example.            MX  1 aspmx.l.google.com.
demo.example.            TXT "v=spf1 include:_spf.google.com ~all"
_dmarc.demo.example.     TXT "v=DMARC1; p=quarantine"
_spf.google.com.         TXT "v=spf1 ip4:192.0.2.0/24 ~all"
"""


def _dns_server() -> str:
    """The demo domain's DNS, on loopback: host:port for DNS_NAMESERVERS."""
    from dnslib.server import DNSLogger, DNSServer
    from dnslib.zoneresolver import ZoneResolver

    port = _free_udp_port()
    quiet = DNSLogger(logf=lambda _line: None)
    DNSServer(ZoneResolver(DEMO_ZONE), address="127.0.0.1", port=port, logger=quiet).start_thread()
    return f"127.0.0.1:{port}"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: run `make browser`.")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="directo_mail_shots_") as tmp:
        env = {
            "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
            "DATABASE_URL": f"sqlite:///{Path(tmp) / 'db.sqlite3'}",
            "DJANGO_DEBUG": "true",
            "LANGUAGE_CODE": "en",
            "MAIL_CATCHER_DIR": str(Path(tmp) / "mail"),
            "MEDIA_ROOT": str(Path(tmp) / "media"),
            "DNS_NAMESERVERS": _dns_server(),
            "PLATFORM_SENDING_IPS": "203.0.113.10",
            "PLATFORM_SPF_INCLUDE": "_spf.directo.example",
        }
        _prepare_database(env)
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=BASE_DIR,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_up(f"{base_url}/accounts/login/", server)
            _take_screenshots(base_url)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
