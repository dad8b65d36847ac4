"""Turns flufl.bounce's own test expectations into `data/expectations.json`.

The bounce corpus in `data/` comes from flufl.bounce's source distribution; so do the answers it
is checked against. This script reads them out of that sdist's test modules (no import, only
`ast`), so anyone can check where each expectation comes from:

    .venv/bin/pip download --no-binary :all: --no-deps flufl.bounce==6.0.0 -d /tmp/fb
    .venv/bin/python -m tests.bounces.make_expectations /tmp/fb/flufl_bounce-6.0.0.tar.gz

It reads three kinds of statement:
- `tests/test_detectors.py`'s `DETECTORS` table: (detector, file, addresses, is_temporary), what
  one detector finds in one message;
- asserts in test functions that parse one data file: `scan_message(msg) == {...}` (the
  permanent failures of the whole pipeline) and `temporary == {...}` / `permanent == {...}`
  after `all_failures(msg)`;
- `tests/test_pipeline.py`'s parametrized `(filename, expected_permanent)` list.
The tests never run this script and never download anything: they read the JSON it wrote.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import tarfile
from pathlib import Path

OUTPUT = Path(__file__).parent / "data" / "expectations.json"
MODULES = ("tests/test_detectors.py", "tests/test_pipeline.py")


def main(sdist: str) -> None:
    path = Path(sdist)
    version, sources = _read_sdist(path)
    expectations: list[dict] = []
    for module in MODULES:
        tree = ast.parse(sources[module], filename=module)
        expectations += _detector_table(tree, module)
        expectations += _function_asserts(tree, module)
        expectations += _parametrized_scans(tree, module)
    document = {
        "source": f"flufl.bounce {version} sdist ({path.name}), modules {', '.join(MODULES)}",
        "sdist_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "generated_by": "tests/bounces/make_expectations.py",
        "expectations": [],
    }
    # One expectation a line: a reviewer can grep a file name and diff a new version.
    text = json.dumps(document, indent=1).replace('"expectations": []', '"expectations": [\n%s\n ]')
    rows = ",\n".join(f"  {json.dumps(row)}" for row in expectations)
    OUTPUT.write_text(text % rows + "\n")
    print(f"{len(expectations)} expectations written to {OUTPUT}")


def _read_sdist(path: Path) -> tuple[str, dict[str, str]]:
    sources: dict[str, str] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            # Members are "flufl_bounce-<version>/tests/...": drop the top folder.
            top, _, inner = member.name.partition("/")
            if inner in MODULES:
                sources[inner] = archive.extractfile(member).read().decode()
    version = top.rpartition("-")[2]
    return version, sources


def _addresses(node: ast.expr) -> list[str]:
    """A literal set or list of bytes addresses, as sorted text."""
    return sorted(value.decode("ascii") for value in ast.literal_eval(node))


def _detector_table(tree: ast.Module, module: str) -> list[dict]:
    rows = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "DETECTORS" for target in node.targets
        ):
            for detector, filename, addresses, is_temporary in ast.literal_eval(node.value):
                rows.append(
                    {
                        "file": filename,
                        "source": f"{module}::DETECTORS",
                        "scope": "detector",
                        "detector": detector,
                        "temporary": is_temporary,
                        "addresses": sorted(a.decode("ascii") for a in addresses),
                    }
                )
    return rows


def _function_asserts(tree: ast.Module, module: str) -> list[dict]:
    """`scan_message(msg) == {...}`, `temporary == {...}`, `permanent == {...}` in a test."""
    rows = []
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        filenames = [
            call.args[0].value
            for call in ast.walk(function)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "_parse"
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ]
        if len(filenames) != 1:
            continue
        for statement in ast.walk(function):
            if not (
                isinstance(statement, ast.Assert)
                and isinstance(statement.test, ast.Compare)
                and isinstance(statement.test.ops[0], ast.Eq)
            ):
                continue
            left, right = statement.test.left, statement.test.comparators[0]
            if isinstance(left, ast.Call) and getattr(left.func, "id", "") == "scan_message":
                detector, what = "scan_message", "permanent"
            elif isinstance(left, ast.Name) and left.id in ("temporary", "permanent"):
                detector, what = "all_failures", left.id
            else:
                continue
            rows.append(
                {
                    "file": filenames[0],
                    "source": f"{module}::{function.name}",
                    "scope": "pipeline",
                    "detector": detector,
                    "temporary": what == "temporary",
                    "addresses": [] if _is_empty(right) else _addresses(right),
                }
            )
    return rows


def _is_empty(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("set", "frozenset")


def _parametrized_scans(tree: ast.Module, module: str) -> list[dict]:
    """`@pytest.mark.parametrize('filename,expected_permanent', [...])` over `scan_message`."""
    rows = []
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        for decorator in function.decorator_list:
            if not (isinstance(decorator, ast.Call) and len(decorator.args) == 2):
                continue
            names = decorator.args[0]
            if not (
                isinstance(names, ast.Constant)
                and str(names.value).replace(" ", "") == "filename,expected_permanent"
            ):
                continue
            for filename, expected in ast.literal_eval(decorator.args[1]):
                rows.append(
                    {
                        "file": filename,
                        "source": f"{module}::{function.name}",
                        "scope": "pipeline",
                        "detector": "scan_message",
                        "temporary": False,
                        "addresses": sorted(a.decode("ascii") for a in expected),
                    }
                )
    return rows


if __name__ == "__main__":
    main(*sys.argv[1:])
