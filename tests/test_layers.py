"""The house's import rules: no module imports one above it in the pipeline, and there are no import cycles.

``LAYERS`` is the one place the layer order is written down (README's layout section and docs/decisions.md point
here). A module may import modules of its own layer or below; every import counts, at module level or inside a
function (a lazy import that goes upward is still an upward dependency), and importing ``a.b.c`` also runs the
packages ``a.b`` and ``a`` (except the importer's own ancestors, whose ``__init__`` re-exports it). A new module
must be given a layer here, or the test fails naming it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rewardkit"

LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["rewardkit.errors", "rewardkit.pooling", "rewardkit.blocks", "rewardkit.allocator"]),
    ("config", ["rewardkit.config", "rewardkit.precision"]),
    ("losses", ["rewardkit.losses"]),
    ("data", ["rewardkit.data", "rewardkit.data.record", "rewardkit.data.hh", "rewardkit.data.transforms",
              "rewardkit.data.margins", "rewardkit.data.readers", "rewardkit.data.synthetic",
              "rewardkit.data.answers", "rewardkit.data.steps"]),
    ("batching", ["rewardkit.batching"]),
    ("model", ["rewardkit.sharing", "rewardkit.model", "rewardkit.heads", "rewardkit.lora", "rewardkit.checkpoint"]),
    ("inference", ["rewardkit.inference", "rewardkit.inference.scoring", "rewardkit.inference.rows"]),
    ("evaluation", ["rewardkit.rewardbench", "rewardkit.evaluate", "rewardkit.report", "rewardkit.verifiers"]),
    ("judges", ["rewardkit.judges", "rewardkit.judges.parse", "rewardkit.judges.templates", "rewardkit.judges.judge"]),
    ("scorer factory", ["rewardkit.inference.factory"]),
    ("training", ["rewardkit.plan", "rewardkit.run", "rewardkit.training", "rewardkit.training.objectives",
                  "rewardkit.training.common", "rewardkit.training.loop"]),
    ("recipes", ["rewardkit.train", "rewardkit.judges.genrm", "rewardkit.judges.evaluation", "rewardkit.shepherd"]),
    ("serving", ["rewardkit.serve", "rewardkit.serve.batcher", "rewardkit.serve.app"]),
    ("clients", ["rewardkit.client", "rewardkit.integrations", "rewardkit.integrations.trl",
                 "rewardkit.integrations.verl", "rewardkit.integrations.openrlhf"]),
    ("interface", ["rewardkit.cli", "rewardkit"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The rewardkit modules ``path`` imports anywhere in it, with the packages each import runs."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            if not target.startswith("rewardkit"):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module and every package above it
                name = ".".join(parts[:i])
                if name in known and name != me and not me.startswith(name + "."):
                    found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def layer_of() -> dict[str, int]:
    return {m: i for i, (_, members) in enumerate(LAYERS) for m in members}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    placed = layer_of()
    missing = sorted(set(modules()) - set(placed))
    stale = sorted(set(placed) - set(modules()))
    assert not missing, f"modules without a layer in tests/test_layers.py LAYERS: {missing}"
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_module_imports_upward():
    layer, names = layer_of(), [n for n, _ in LAYERS]
    upward = [f"{a} ({names[layer[a]]}) imports {b} ({names[layer[b]]})"
              for a, targets in sorted(graph().items()) for b in sorted(targets)
              if a in layer and b in layer and layer[b] > layer[a]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, f"import cycles: {found}"


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checker itself: a cycle and an upward edge planted in a copy of the graph are found."""
    edges = graph()
    assert "rewardkit.model" in edges["rewardkit.heads"]
    planted = {k: set(v) for k, v in edges.items()}
    planted["rewardkit.model"].add("rewardkit.heads")
    assert ["rewardkit.heads", "rewardkit.model"] in cycles(planted)
    layer = layer_of()
    assert layer["rewardkit.train"] > layer["rewardkit.model"]


def test_importing_the_server_does_not_load_training():
    """``import rewardkit.serve.app`` must not pull in training, peft or DeepSpeed (the lazy ``rewardkit``)."""
    import subprocess
    import sys

    code = ("import sys, rewardkit.serve.app\n"
            "print(sorted(m for m in sys.modules if m in ('peft', 'rewardkit.train', 'rewardkit.training', "
            "'rewardkit.run', 'deepspeed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
