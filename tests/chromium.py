"""How the browser tests and `scripts/screenshots.py` start Debian's Chromium, and how the tests
see every Content-Security-Policy violation.

Playwright cannot download browsers here; these flags keep Chromium off the network
(see ../shared/TESTING-NOTES.md).

`WatchedBrowser` wraps the Playwright browser the `chromium` fixture hands out: every context it
makes reports each violation of the page's policy twice over, through the DOM's
`securitypolicyviolation` event and through Chromium's console ("Refused to execute inline
script because it violates the following Content Security Policy directive: ..."), into one
`CspWatcher`. tests/conftest.py fails a test whose pages had any violation, unless the test is
marked `csp_violations_expected` (the attack scenarios, whose payloads are meant to be refused).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

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

# Runs in every page and frame before the page's own scripts (Playwright injects it through
# the DevTools protocol, so the page's policy does not apply to it). The binding survives
# navigations, unlike anything kept in `window`.
_LISTEN = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolation({
    url: document.URL,
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    sample: event.sample,
    where: event.sourceFile ? `${event.sourceFile}:${event.lineNumber}` : "",
  });
});
"""
_BINDING = "__cspViolation"
CONSOLE_MARK = "Content Security Policy"


@dataclass(frozen=True)
class Violation:
    url: str  # the page
    source: str  # "event" (securitypolicyviolation) or "console"
    text: str

    def __str__(self) -> str:
        return f"{self.url} [{self.source}] {self.text}"


class CspWatcher:
    """Every CSP violation in the contexts it watches, from both sources."""

    def __init__(self) -> None:
        self.events: list[Violation] = []
        self.console: list[Violation] = []

    def watch(self, context) -> None:
        context.expose_binding(_BINDING, self._on_event)
        context.add_init_script(_LISTEN)
        context.on("console", self._on_console)

    def clear(self) -> None:
        self.events.clear()
        self.console.clear()

    def _on_event(self, source, info: dict) -> None:
        text = f"{info.get('directive')} blocked {info.get('blocked')!r}"
        if info.get("sample"):
            text += f" (sample {info['sample']!r})"
        if info.get("where"):
            text += f" at {info['where']}"
        self.events.append(Violation(info.get("url") or "", "event", text))

    def _on_console(self, message) -> None:
        if CONSOLE_MARK not in message.text:
            return
        page = message.page
        self.console.append(Violation(page.url if page else "", "console", message.text))

    def violations(self) -> list[Violation]:
        """Both sources' findings. Each violation usually shows in both; with scripts off only
        the console sees it, and a page that navigates away at once may lose its event."""
        return [*self.events, *self.console]

    def count(self) -> int:
        """Violations counted once: per page, the larger of the two sources' counts."""
        per_page: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for violation in self.events:
            per_page[violation.url][0] += 1
        for violation in self.console:
            per_page[violation.url][1] += 1
        return sum(max(pair) for pair in per_page.values())

    def report(self) -> str:
        return "\n".join(str(v) for v in self.violations())


class WatchedBrowser:
    """A Playwright `Browser` whose contexts report CSP violations to `self.csp`."""

    def __init__(self, browser) -> None:
        self._browser = browser
        self.csp = CspWatcher()

    def new_context(self, **options):
        context = self._browser.new_context(**options)
        self.csp.watch(context)
        return context

    def new_page(self, **options):
        raise TypeError("use new_context().new_page(): a bare page would not be CSP-watched")

    def __getattr__(self, name: str):
        return getattr(self._browser, name)
