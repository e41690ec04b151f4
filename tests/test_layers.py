"""The house's plan, held to the code: imports run one way down the layers the README's
module map names, nothing imports the package face, each fact has one home, and the
command line only parses and prints."""
import ast
import re

import pytest

from conftest import ROOT

PACKAGE = ROOT / "rnnlm"
README = (ROOT / "README.md").read_text(encoding="utf-8")

# The README's module map, top to bottom (its first column): a module's layer is the first
# whose prefix matches its dotted name.
LAYERS = {
    "interface": ("rnnlm.cli", "rnnlm.__main__"),
    "api": ("rnnlm.api",),
    "run": ("rnnlm.run",),
    "workflows": ("rnnlm.sample", "rnnlm.evaluate", "rnnlm.gradcheck", "rnnlm.gradflow",
                  "rnnlm.plots", "rnnlm.inspection", "rnnlm.export"),
    "io": ("rnnlm.io",),
    "engines": ("rnnlm.engines", "rnnlm.textbook", "rnnlm.fast"),
    "shared": ("rnnlm.params", "rnnlm.config", "rnnlm.errors", "rnnlm.version",
               "rnnlm.arguments"),
}
ORDER = list(LAYERS)  # top first


def modules():
    """{dotted name: path} of every module of the package but its face."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "rnnlm":
            found[name] = path
    return found


def layer(name):
    for index, (_, prefixes) in enumerate(LAYERS.items()):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer of the module map")


def imports(path, known):
    """The package's modules path imports, anywhere in it; "rnnlm" for the package face
    (a name that `from rnnlm import` takes that is not a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rnnlm"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "rnnlm":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


GRAPH = {name: imports(path, modules()) for name, path in modules().items()}


def test_no_module_imports_the_package_face():
    upward = sorted(name for name, targets in GRAPH.items() if "rnnlm" in targets)
    assert upward == []


def test_imports_run_down_the_layers_of_the_readme_map():
    for name, targets in GRAPH.items():
        for target in targets:
            assert layer(target) >= layer(name), f"{name} imports {target}, a layer above it"
    for word in ORDER:  # the map's first column, in this order
        assert re.search(rf"^{word}\s", README, re.M), word
    positions = [re.search(rf"^{word}\s", README, re.M).start() for word in ORDER]
    assert positions == sorted(positions)


def test_there_is_no_import_cycle():
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in GRAPH.get(name, ()):
            if target == name or target not in GRAPH:
                continue
            assert state.get(target) != "open", " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in GRAPH:
        if name not in state:
            visit(name, [name])


def strings(path):
    """The string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


@pytest.mark.parametrize("home,facts", [
    ("rnnlm/io/rundir.py", ("best.npz", "last.npz", "config.yaml", "metrics.csv", "curves.png")),
    ("rnnlm/io/checkpoint.py", ("best_val_loss", "lr_scale", "budget_spent", "init_from")),
])
def test_each_fact_is_spelled_in_its_home_alone(home, facts):
    for name, path in modules().items():
        if path == ROOT / home:
            continue
        for text in strings(path):
            for fact in facts:
                assert text != fact, f"{path.relative_to(ROOT)} spells {fact!r} ({home} owns it)"


def test_the_sizing_rules_constants_live_in_the_sizing_module():
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        if name != "rnnlm.run.sizing":
            assert not re.search(r"^(SIZED|HIDDEN_SIZES|MIN_UPDATES|REGULARISATION)\b",
                                 source, re.M), name


def test_the_command_line_parses_and_prints():
    source = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {"subprocess", "re"} & imported
    assert source.count("\n") <= 600
    assert (PACKAGE / "api.py").read_text(encoding="utf-8").count("\n") <= 200


def test_no_function_is_longer_than_sixty_lines():
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{name}.{node.name}: {length} lines"
