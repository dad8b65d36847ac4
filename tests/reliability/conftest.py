"""The reliability suite (issue 7): `make reliability` runs it and prints one table of figures.

Each test records what it measured with the `figures` fixture: an area, a figure, the value and
the target it must meet (the test asserts the target itself too). At the end the table is
printed and written to var/reliability/figures.md (and .json), which the README links.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

OUT = Path(__file__).resolve().parents[2] / "var" / "reliability"


@dataclass
class Figure:
    area: str
    figure: str
    value: int | float | str
    target: str  # e.g. "= 0", "≤ 3", "" for a plain count

    def met(self) -> bool | None:
        if not self.target or not isinstance(self.value, int | float):
            return None
        op, _, bound = self.target.partition(" ")
        number = float(bound)
        return {"=": self.value == number, "≤": self.value <= number, "≥": self.value >= number}[op]


class Figures:
    def __init__(self) -> None:
        self.rows: list[Figure] = []

    def add(self, area: str, figure: str, value: int | float | str, target: str = "") -> None:
        self.rows.append(Figure(area, figure, value, target))


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


def _machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    database = (
        "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
    )
    broker = (
        "Redis" if os.environ.get("CELERY_BROKER_URL", "").startswith("redis") else "filesystem"
    )
    return (
        f"{os.cpu_count()} cores, {cpu or platform.machine()}, Python {platform.python_version()}, "
        f"{database} + {broker} broker"
    )


def table() -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Reliability figures, {when}, {_machine()}",
        "",
        "| area | figure | value | target | met |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for row in _FIGURES.rows:
        met = {True: "yes", False: "**NO**", None: ""}[row.met()]
        lines.append(f"| {row.area} | {row.figure} | {row.value} | {row.target} | {met} |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FIGURES.rows:
        return
    text = table()
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "figures.md").write_text(text)
    (OUT / "figures.json").write_text(
        json.dumps([asdict(row) | {"met": row.met()} for row in _FIGURES.rows], indent=2)
    )
