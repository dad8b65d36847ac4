"""The import graph (issue 15, item 1), read from the source with `ast`, not by importing.

- `accounts` (who the user is) reaches nothing of the sender settings or the providers, not even
  through another app: the whole closure of its imports inside the project is checked.
- No provider package imports another provider, nor the registry that lists them all: each
  knows only its own folder and the shared pieces (smtp_settings/providers/base.py, the OAuth
  helpers, the transports).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "bounces", "directo_mail", "filestore", "invoices", "mail_templates")
APPS += ("outbox", "smtp_settings")
PROVIDERS = ROOT / "smtp_settings" / "providers"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (at module level or inside a function), made absolute."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # "from pkg import sub" may name a submodule.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _project_modules() -> dict[str, Path]:
    modules = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                modules[_module_name(path)] = path
    return modules


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules}
        # Importing a submodule runs its packages' __init__ too.
        for target in list(graph[name]):
            parts = target.split(".")
            graph[name].update(
                ".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules
            )
    return graph


def _closure(graph: dict[str, set[str]], start: set[str]) -> dict[str, str]:
    """Every module reachable from `start`, with the module that first imported it."""
    seen: dict[str, str] = {name: "" for name in start}
    todo = list(start)
    while todo:
        name = todo.pop()
        for target in graph.get(name, ()):
            if target not in seen:
                seen[target] = name
                todo.append(target)
    return seen


def _path_to(seen: dict[str, str], target: str) -> str:
    chain = [target]
    while seen.get(chain[-1]):
        chain.append(seen[chain[-1]])
    return " <- ".join(chain)


def test_the_graph_reader_sees_real_imports():
    """A control: the reader finds imports that do exist, in both directions."""
    graph = _graph()
    assert "accounts.models" in graph["smtp_settings.selectors"]
    assert "smtp_settings.providers.base" in graph["smtp_settings.providers.google"]
    assert "smtp_settings.oauth" in graph["smtp_settings.providers.microsoft365.oauth"]
    assert "smtp_settings.providers.google" in graph["smtp_settings.providers"]


def test_accounts_reaches_nothing_of_the_sender_settings():
    graph = _graph()
    start = {name for name in graph if name == "accounts" or name.startswith("accounts.")}
    assert len(start) > 5
    seen = _closure(graph, start)
    reached = sorted(name for name in seen if name.split(".")[0] == "smtp_settings")
    assert not reached, [_path_to(seen, name) for name in reached]


def test_no_provider_imports_another_or_the_registry():
    names = sorted(p.name for p in PROVIDERS.iterdir() if (p / "__init__.py").exists())
    assert {"google", "microsoft365"} <= set(names)
    for name in names:
        own = f"smtp_settings.providers.{name}"
        for path in (PROVIDERS / name).rglob("*.py"):
            for module in _imports(path):
                if not module.startswith("smtp_settings.providers"):
                    continue
                allowed = module == own or module.startswith(own + ".")
                allowed = allowed or module.startswith("smtp_settings.providers.base")
                assert allowed, f"{path.relative_to(ROOT)} imports {module}"
