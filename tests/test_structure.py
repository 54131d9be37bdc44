"""The architecture's rules, checked on the source: no import cycle between modules, no import from a lower layer
into a higher one, the library never imports configs/, modules stay short enough to read, and a model's name is
spelled only in its registry entry."""
import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "rsrnn_jax"
MAX_LINES = 500


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
  return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: pathlib.Path, modules: dict) -> set:
  """Modules of the library that ``path`` imports (at module level or inside functions)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return {m for m in out if m in modules or m.split(".")[0] == "configs"}


def test_no_import_cycle_between_modules():
  modules = _modules()
  graph = {m: {d for d in _imports(p, modules) if d in modules and d != m} for m, p in modules.items()}
  # A package's __init__ re-exporting its own submodules is not a dependency of those submodules on it.
  for m in graph:
    graph[m] = {d for d in graph[m] if not (d in modules and modules[d].name == "__init__.py"
                                            and m.startswith(d + "."))}
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == "open":
        raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_the_library_never_imports_configs():
  modules = _modules()
  offenders = [m for m, p in modules.items() if any(d.split(".")[0] == "configs" for d in _imports(p, modules))]
  assert not offenders, f"these modules import configs/: {offenders}"


def test_no_module_is_too_long_to_read():
  long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_model_names_are_spelled_only_in_the_registry():
  from rsrnn_jax.models import registry
  names = [n for n in registry.names() if n != "rsrnn"]  # "rsrnn" is also the package's own prefix
  allowed = {PKG / "models" / "registry.py"}
  hits = []
  for p in PKG.rglob("*.py"):
    if p in allowed:
      continue
    text = p.read_text()
    for n in names:
      if re.search(rf"""["']{re.escape(n)}["']""", text):
        hits.append(f"{p.relative_to(ROOT)}: {n!r}")
  assert not hits, "model names outside rsrnn_jax/models/registry.py: " + ", ".join(hits)


# The library's layers, bottom to top: a module imports its own layer and the layers below it, never one above
# (at module level or inside a function). The pure attack algorithms sit below training (adversarial training
# uses them); the adversarial evaluation of checkpoints (the suite) sits above training and the clean evaluation.
LAYERS = (
    ("rsrnn_jax.workdir",),
    ("rsrnn_jax.models", "rsrnn_jax.data", "rsrnn_jax.report"),
    ("rsrnn_jax.configlib",),
    ("rsrnn_jax.attacks",),
    ("rsrnn_jax.train",),
    ("rsrnn_jax.evaluation", "rsrnn_jax.outputs"),
    ("rsrnn_jax.robustness",),
    ("rsrnn_jax.reproduction", "rsrnn_jax.api", "rsrnn_jax.run"),
)


def _layer(module: str) -> int:
  """The layer of a module: its longest prefix in LAYERS; any other module of the library is on the top layer."""
  hits = [(len(n), i) for i, names in enumerate(LAYERS) for n in names if module == n or module.startswith(n + ".")]
  return max(hits)[1] if hits else len(LAYERS) - 1


def _upward_imports(modules: dict) -> list:
  """"A -> B" for every import of a module B on a higher layer than A's (the root package ``rsrnn_jax``, which
  every ``from rsrnn_jax import X`` passes through, is no dependency)."""
  return [f"{m} -> {d}" for m, p in sorted(modules.items()) for d in sorted(_imports(p, modules))
          if d in modules and d != "rsrnn_jax" and _layer(d) > _layer(m)]


def test_no_lower_layer_imports_a_higher_one():
  assert _layer("rsrnn_jax.attacks.apgd") < _layer("rsrnn_jax.train.step") < _layer("rsrnn_jax.robustness.suite")
  up = _upward_imports(_modules())
  assert not up, "imports from a lower layer into a higher one (tests/test_structure.py LAYERS): " + ", ".join(up)


def test_the_attack_algorithms_import_only_themselves_and_the_models(tmp_path):
  modules = _modules()
  for m, p in modules.items():
    if m.startswith("rsrnn_jax.attacks"):
      outside = {d for d in _imports(p, modules) if d != "rsrnn_jax"
                 and not d.startswith(("rsrnn_jax.attacks", "rsrnn_jax.models"))}
      assert not outside, f"{m} imports {sorted(outside)}: the attack algorithms import nothing above the models"
  # the checker itself: a training module that imported the suite would be reported
  bad = tmp_path / "step.py"
  bad.write_text("from rsrnn_jax.robustness import suite\n")
  assert _upward_imports({"rsrnn_jax.train.step": bad, "rsrnn_jax.robustness.suite": bad}) == [
      "rsrnn_jax.train.step -> rsrnn_jax.robustness.suite"]
