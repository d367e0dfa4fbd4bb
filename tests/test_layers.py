"""One direction of imports: each package imports only the layers below it, and no modules
import each other in a loop. Parsed with ``ast`` (function-local imports count; imports
under ``if TYPE_CHECKING:`` are annotations only and do not)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# top to bottom: the face composes everything; the tools are leaves
LAYERS = {"cluster": 4, "benchmarks": 3, "policy": 2, "rewards": 2, "rollout": 1, "actors": 0}


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path):
    """(imported module, line) of every runtime import in ``path``."""
    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                yield from ((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module, child.lineno
                yield from ((f"{child.module}.{a.name}", child.lineno) for a in child.names)
            yield from walk(child)
    return list(walk(ast.parse(path.read_text(), str(path))))


def modules():
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            yield name, path


def test_no_layer_imports_a_higher_or_peer_layer():
    wrong = {}
    for name, path in modules():
        pkg = name.split(".")[0]
        for target, line in imports(path):
            top = target.split(".")[0]
            if top in LAYERS and top != pkg and LAYERS[top] >= LAYERS[pkg]:
                wrong.setdefault((str(path.relative_to(ROOT)), line), f"imports {target} ({top} is not below {pkg})")
    assert wrong == {}, "\n".join(f"{f}:{line} {msg}" for (f, line), msg in sorted(wrong.items()))


def test_no_import_loops():
    known = dict(modules())
    graph = {}
    for name, path in known.items():
        graph[name] = sorted({t for t, _ in imports(path) if t in known and t != name})
    loops, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert loops == [], "\n".join(loops)


def test_the_checker_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cluster.config import A\n"
                   "def f():\n    from cluster.config import AppConfig\n")
    assert imports(bad) == [("os", 1), ("typing", 2), ("typing.TYPE_CHECKING", 2), ("cluster.config", 6),
                            ("cluster.config.AppConfig", 6)]
