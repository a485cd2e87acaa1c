"""The tree says what the product is: docs/ARCHITECTURE.md and the repository agree, the core does not
import the controls, no module imports in a cycle, no product module outgrows one job, and the docs
link nowhere outside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
PRODUCT = ("gateway", "plugins")
MAX_MODULE_LINES = 420  # "about 400": one job per module


def tree_block() -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    tree = [b for b in blocks if b.startswith("gateway/")]
    assert tree, "docs/ARCHITECTURE.md has no tree block starting with gateway/"
    return tree[0]


def listed_names(block: str) -> dict[str, set[str]]:
    """Top-level folders and, under gateway/ and plugins/, the names each lists."""
    listed: dict[str, set[str]] = {}
    top = ""
    for line in block.splitlines():
        m = re.match(r"^(\S+/)\s", line + " ")
        if m:
            top = m.group(1).rstrip("/")
            listed.setdefault(top, set())
            continue
        m = re.match(r"^  (\S+)", line)
        if m and top:
            listed[top].add(m.group(1).rstrip("/"))
    return listed


def test_every_top_level_folder_of_the_tree_exists_and_every_folder_is_in_the_tree() -> None:
    listed = listed_names(tree_block())
    for name in listed:
        assert (ROOT / name).is_dir(), f"docs/ARCHITECTURE.md lists {name}/, which does not exist"
    product_folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    ignored = {"var", "bench-results", "build", "dist", "node_modules", "__pycache__"}
    for name in product_folders - ignored:
        if any((ROOT / name).glob("*.egg-info")) or name.endswith(".egg-info"):
            continue
        assert name in listed, f"{name}/ is not in the tree of docs/ARCHITECTURE.md"


def test_the_tree_lists_every_core_module_and_every_control() -> None:
    listed = listed_names(tree_block())
    core = {p.name for p in (ROOT / "gateway").iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    core -= {"__main__.py"}
    core |= {p.name for p in (ROOT / "gateway").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    missing = {
        n for n in core if n.removesuffix(".py") not in {x.removesuffix(".py") for x in listed["gateway"]}
    }
    assert not missing, f"core modules missing from docs/ARCHITECTURE.md: {sorted(missing)}"
    controls = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    assert controls == listed["plugins"], (
        f"plugins/ holds {sorted(controls)}, docs/ARCHITECTURE.md lists {sorted(listed['plugins'])}"
    )
    for name in listed["gateway"]:
        assert (ROOT / "gateway" / name).exists(), f"docs/ARCHITECTURE.md lists gateway/{name}, absent"


def product_modules() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when this module is imported (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in [node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                found.add(sub.module)
                found |= {f"{sub.module}.{a.name}" for a in sub.names}
    return found


def all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_core_does_not_import_the_controls() -> None:
    """The core knows HTTP and FHIR, not the notice; plugins are loaded by name (gateway/hooks.py)."""
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in all_imports(p) if m.split(".")[0] == "plugins")
        for p in (ROOT / "gateway").rglob("*.py")
        if p.name != "cli.py"  # the command line: audit search --balp, watermark decode
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core modules import plugins: {offenders}"


def test_no_import_cycles() -> None:
    modules = {module_name(p): p for p in product_modules()}
    graph = {
        name: {m for m in top_level_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_product_module_outgrows_one_job() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in product_modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_docs_link_nowhere_outside_the_repository() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "opa_policies" / "README.md"]
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+://", target):
                continue  # a web address, not a path of another checkout
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), (
                f"{doc.relative_to(ROOT)} links outside the repository: {target}"
            )
            assert resolved.exists(), f"{doc.relative_to(ROOT)} links to a missing file: {target}"
