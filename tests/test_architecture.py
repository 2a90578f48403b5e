"""The layers the README's Architecture section describes, enforced on every import (lazy ones too).

A module may import modules of its own layer or below, never above. Adding a module means placing it
here; moving one up or down is a design decision the diff of this file makes visible.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("rag", "assets", "indexing", "finetune", "eval")

# lowest first; a name is a module or a package prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "rag",
            "rag.types",
            "rag.errors",
            "rag.config",
            "rag.hardware",
            "rag.files",
            "rag.text",
            "rag.prompt",
            "rag.span",
        ),
    ),
    ("model store and data sets", ("assets",)),
    ("indexing", ("indexing",)),
    ("reader and training", ("rag.reader", "finetune")),
    ("pipeline", ("rag.pipeline",)),
    ("evaluation and report", ("eval",)),
    ("server", ("rag.server",)),
    ("command line", ("rag.cli", "rag.__main__")),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific entry naming `module` (or a package above it)."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best_len:
                best, best_len = i, len(n)
    if best is None:
        raise KeyError(module)
    return best


def our_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            name = ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            mods[name] = p
    return mods


def imports_of(path: Path, module: str) -> set[str]:
    """Modules of ours that `path` imports, anywhere in the file."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from rag import models` names a module
    mods = our_modules()
    return {m for m in found if m in mods}


def test_every_module_has_a_layer():
    missing = [m for m in our_modules() if not _placed(m)]
    assert not missing, f"place these modules in tests/test_architecture.py LAYERS: {missing}"


def _placed(m: str) -> bool:
    try:
        layer_of(m)
        return True
    except KeyError:
        return False


def test_no_module_imports_up_a_layer():
    bad = []
    for mod, path in our_modules().items():
        if not _placed(mod):
            continue
        for dep in imports_of(path, mod):
            if _placed(dep) and layer_of(dep) > layer_of(mod):
                bad.append(f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not bad, "imports up a layer:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from rag import cli\n    import eval.run\n")
    assert {"rag.cli", "eval.run"} <= imports_of(f, "rag.prompt")
    assert layer_of("rag.cli") > layer_of("rag.prompt") and layer_of("eval.run") > layer_of("rag.reader")


def test_base_modules_import_only_the_standard_library_and_errors():
    """rag.types, rag.prompt, rag.files, rag.text, rag.hardware import nothing of ours (config: errors)."""
    allowed = {"rag.config": {"rag.errors"}}
    for mod in ("rag.types", "rag.prompt", "rag.files", "rag.text", "rag.hardware", "rag.config"):
        path = our_modules().get(mod)
        if path is None:
            continue
        assert imports_of(path, mod) <= allowed.get(mod, set()), mod


@pytest.mark.parametrize("cmd", [["--help"], ["index", "--help"], ["ask", "--help"]])
def test_help_imports_no_heavy_library(cmd):
    """`rag --help` stays instant: torch, transformers, faiss load inside command bodies only."""
    code = (
        "import sys, rag.cli as c\nsys.argv = ['rag', *%r]\ntry:\n    c.main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'sentence_transformers') if m in sys.modules))"
        % (cmd,)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
