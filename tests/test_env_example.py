"""`.env.example` lists exactly the variables settings read, each under a one-line comment."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "directo_mail" / "settings.py"
ENV_EXAMPLE = ROOT / ".env.example"

# `NAME=value` or, for a default that is fine as it is, `# NAME=value`.
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")


def settings_variables() -> set[str]:
    """Names passed to `env(...)` and `env.<cast>(...)` (bool, list, db, email_url, path, ...)."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text(), filename=str(SETTINGS))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "env"
        )
        if not is_env:
            continue
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "var")]
        assert args, f"settings.py:{node.lineno}: env call without a variable name"
        name = args[0]
        assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
            f"settings.py:{node.lineno}: the variable name must be a string literal"
        )
        names.add(name.value)
    return names


def example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def example_variables() -> set[str]:
    return {m[1] for line in example_lines() if (m := ASSIGNMENT.match(line))}


def test_parser_sees_settings_variables() -> None:
    # Guards the parser itself: a multi-line call and each kind of cast are found.
    found = settings_variables()
    for name in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DATABASE_URL", "EMAIL_URL", "MEDIA_ROOT"):
        assert name in found


def test_every_setting_variable_is_documented() -> None:
    missing = settings_variables() - example_variables()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_every_documented_variable_is_read() -> None:
    stale = example_variables() - settings_variables()
    assert not stale, f"not read by settings.py, remove from .env.example: {sorted(stale)}"


def test_each_variable_is_listed_once_under_a_comment() -> None:
    lines = example_lines()
    seen: list[str] = []
    for number, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if not match:
            continue
        seen.append(match[1])
        above = lines[number - 1] if number else ""
        assert above.startswith("#") and not ASSIGNMENT.match(above), (
            f".env.example line {number + 1}: {match[1]} needs a one-line comment above it"
        )
        assert len(above.lstrip("# ").strip()) > 10, f"{match[1]}: say what it is for"
    duplicates = {name for name in seen if seen.count(name) > 1}
    assert not duplicates, f"listed twice in .env.example: {sorted(duplicates)}"
