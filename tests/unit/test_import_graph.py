"""The import graph has no cycles, and source files stay small (issue 29).

Every Python file under ``src/sgl_deploy``, ``plugins/`` and ``lab/`` is parsed (``ast``, nothing is
imported) for its imports, function-local ones included:

* ``sgl_deploy`` modules (``import sgl_deploy.x``, ``from sgl_deploy import x``,
  ``from sgl_deploy.x import y``, relative imports inside the package);
* Ansible module_utils (``from ansible.module_utils import sgl_x`` -> ``plugins/module_utils/sgl_x.py``);
* sibling modules of a directory put on ``sys.path`` (``import lab_intent`` in ``lab/engine``).

Any cycle fails the test, named module by module. The second test keeps every file under ``src/``
within ``MAX_LINES``, except the ``OVERSIZED`` allow-list: debt that issue 29 still has to split.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "sgl_deploy"
SCANNED = (SRC / PACKAGE, ROOT / "plugins", ROOT / "lab")

MAX_LINES = 800
# Files under src/ still over MAX_LINES: not split yet, each a named part of issue 29. The test also
# fails when one of them is back under the limit, so the list only shrinks.
OVERSIZED = {
    # plugins/module_utils/sgl_weights.py through a symlink: issue 29's weights split (store and lock,
    # progress, hub client, verify, mirror, fan-out, CLI).
    "sgl_deploy/weights.py",
    # the planner: plan rules partly moved to plan_rules.py; the rest waits for its own split.
    "sgl_deploy/planner.py",
    # fleet validation: the value rules and the role argument-spec checks are still one module.
    "sgl_deploy/validate.py",
}


# --------------------------------------------------------------------------- the graph


def module_name(path: Path, src: Path) -> str:
    """``sgl_deploy.x`` for a package file (``src`` holds the package), else the path relative to the
    repository (``src``'s parent)."""
    if path.is_relative_to(src):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)
    return path.relative_to(src.parent).as_posix()


def _package_target(name: str, package_dir: Path) -> str | None:
    """The package module ``name`` (``sgl_deploy.x.y`` may name a function: trimmed to a module)."""
    parts = name.split(".")
    while len(parts) > 1:
        rel = Path(*parts[1:])
        if (package_dir / rel.with_suffix(".py")).exists() or (package_dir / rel / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return PACKAGE


def imports_of(path: Path, src: Path) -> set[str]:
    """The graph nodes ``path`` imports, anywhere in the file (function-local imports included)."""
    package_dir = src / PACKAGE
    me = module_name(path, src)
    in_package = me.split(".")[0] == PACKAGE
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()

    def package(name: str) -> None:
        found.add(_package_target(name, package_dir))

    def sibling(name: str) -> None:
        candidate = path.parent / f"{name.split('.')[0]}.py"
        if candidate.exists() and candidate.resolve() != path.resolve():
            found.add(module_name(candidate, src))

    def module_util(name: str) -> None:
        candidate = src.parent / "plugins" / "module_utils" / f"{name}.py"
        if candidate.exists():
            found.add(module_name(candidate, src))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    package(alias.name)
                elif alias.name.startswith("ansible.module_utils."):
                    module_util(alias.name.split(".")[2])
                elif not in_package:
                    sibling(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: only meaningful inside the package
                if not in_package:
                    continue
                anchor = me.split(".")
                if not path.name == "__init__.py":
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for alias in node.names:  # from sgl_deploy import x: x may be a module
                    package(f"{base}.{alias.name}")
            elif base == "ansible.module_utils":
                for alias in node.names:
                    module_util(alias.name)
            elif base.startswith("ansible.module_utils."):
                module_util(base.split(".")[2])
            elif base and not node.level and not in_package:
                sibling(base)
    found.discard(me)  # "import sgl_deploy.x" inside x itself is no edge
    return found


def python_files(dirs) -> list[Path]:
    files = []
    for top in dirs:
        files.extend(p for p in sorted(top.rglob("*.py")) if "__pycache__" not in p.parts)
    return files


def import_graph(src: Path = SRC, dirs=SCANNED) -> dict[str, set[str]]:
    """{node: the nodes it imports}; package files are named ``sgl_deploy.x``, others by their path
    in the repository (``src``'s parent)."""
    graph: dict[str, set[str]] = {}
    for path in python_files(dirs):
        graph.setdefault(module_name(path, src), set()).update(imports_of(path, src))
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # shortest path start -> ... -> start inside the component (BFS)
        paths = {start: [start]}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            v = queue.pop(0)
            for w in sorted(graph.get(v, ())):
                if w == start:
                    cycle = paths[v] + [start]
                    break
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        cycles.append(cycle or component)
    return sorted(cycles)


def test_no_import_cycles():
    graph = import_graph(SRC, SCANNED)
    assert "sgl_deploy.probe" in graph and "sgl_deploy.probe_checks" in graph["sgl_deploy.probe"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_probe_chain_goes_one_way():
    """checks -> client -> suites (m3, default, recipe) -> CLI: no module imports a later one."""
    graph = import_graph(SRC, (SRC / PACKAGE,))
    chain = ["probe_checks", "probe_client", "probe_m3", "probe_default", "recipe_suite", "probe"]
    for i, name in enumerate(chain):
        later = {f"{PACKAGE}.{n}" for n in chain[i + 1:]}
        assert not graph[f"{PACKAGE}.{name}"] & later, (name, graph[f"{PACKAGE}.{name}"] & later)
    assert not graph[f"{PACKAGE}.errors"], "sgl_deploy.errors imports nothing from the package"
    assert not graph[f"{PACKAGE}.topology"] - {f"{PACKAGE}.errors"}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, cycle", [
    # a function-local import closes the circle (firewall <-> monitoring before issue 29)
    ({"src/sgl_deploy/__init__.py": "",
      "src/sgl_deploy/a.py": "from sgl_deploy import b\n",
      "src/sgl_deploy/b.py": "def f():\n    from sgl_deploy import a\n"},
     ["sgl_deploy.a", "sgl_deploy.b", "sgl_deploy.a"]),
    # a name imported from a module is an edge to that module; relative imports count
    ({"src/sgl_deploy/__init__.py": "",
      "src/sgl_deploy/a.py": "from sgl_deploy.b import thing\n",
      "src/sgl_deploy/b.py": "from .c import other\n",
      "src/sgl_deploy/c.py": "import sgl_deploy.a\n"},
     ["sgl_deploy.a", "sgl_deploy.b", "sgl_deploy.c", "sgl_deploy.a"]),
    # sibling modules of a directory on sys.path (lab/engine)
    ({"src/sgl_deploy/__init__.py": "",
      "lab/engine/x.py": "import y\n",
      "lab/engine/y.py": "def f():\n    from x import g\n"},
     ["lab/engine/x.py", "lab/engine/y.py", "lab/engine/x.py"]),
    # module_utils through ansible.module_utils
    ({"src/sgl_deploy/__init__.py": "",
      "plugins/module_utils/sgl_p.py": "from ansible.module_utils import sgl_q\n",
      "plugins/module_utils/sgl_q.py": "from ansible.module_utils.sgl_p import f\n"},
     ["plugins/module_utils/sgl_p.py", "plugins/module_utils/sgl_q.py", "plugins/module_utils/sgl_p.py"]),
])
def test_a_cycle_is_found_and_named(tmp_path, files, cycle):
    root = _tree(tmp_path, files)
    dirs = [d for d in (root / "src" / PACKAGE, root / "plugins", root / "lab") if d.exists()]
    graph = import_graph(root / "src", dirs)
    assert find_cycles(graph) == [cycle]


def test_a_one_way_chain_has_no_cycle(tmp_path):
    root = _tree(tmp_path, {
        "src/sgl_deploy/__init__.py": "",
        "src/sgl_deploy/checks.py": "import json\n",
        "src/sgl_deploy/client.py": "from sgl_deploy.checks import x\n",
        "src/sgl_deploy/suite.py": "from sgl_deploy import checks, client\n",
        "src/sgl_deploy/cli.py": "def main():\n    from sgl_deploy import suite\n",
        "plugins/filter/f.py": "from sgl_deploy import cli\n",
    })
    graph = import_graph(root / "src", [root / "src" / PACKAGE, root / "plugins"])
    assert graph["plugins/filter/f.py"] == {"sgl_deploy.cli"}
    assert find_cycles(graph) == []


# --------------------------------------------------------------------------- file size


def test_no_source_file_over_the_limit():
    over = {}
    for path in python_files([SRC]):
        rel = path.relative_to(SRC).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            over[rel] = lines
    unexpected = {k: v for k, v in over.items() if k not in OVERSIZED}
    assert not unexpected, f"files over {MAX_LINES} lines (split them): {unexpected}"
    paid = sorted(OVERSIZED - set(over))
    assert not paid, f"now within {MAX_LINES} lines: remove them from OVERSIZED: {paid}"
