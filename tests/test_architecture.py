"""The layering promised in docs/ARCHITECTURE.md: data flows one way, theory is torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bebkit"

# Lower index = lower layer. A module may import only its own layer or lower ones.
LAYERS: list[set[str]] = [
    {
        "errors",
        "estimate",
        "integrity",
        "io",
        "locks",
        "paths",
        "records",
        "paper",
        "checkpoint",
        "__init__",
    },
    {"theory"},
    {"synthetic"},
    {"data"},
    {"models"},
    {"components"},
    {"judge"},
    {"estimators"},
    {"fits"},
    {"reporting"},
    {"pipeline"},
    {"cli"},
]
# The protocol is the one interface every layer shares (torch-free by design).
SHARED = {"models.protocol"}


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module bebkit.{top} is not assigned to a layer in this test")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bebkit"):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names if a.name.startswith("bebkit"))
    return out


def _top(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_upward_imports(path: Path) -> None:
    here = _layer(_top(path.relative_to(SRC).parts))
    for module in _imports(path):
        rest = module.split(".")[1:]
        if not rest or ".".join(rest[:2]) in SHARED:
            continue
        there = _layer(rest[0])
        assert there <= here, f"{path.relative_to(SRC)} imports {module} (a higher layer)"


def test_theory_and_synthetic_do_not_import_torch() -> None:
    code = (
        "import sys, bebkit.theory, bebkit.synthetic, bebkit.data, bebkit.models;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
