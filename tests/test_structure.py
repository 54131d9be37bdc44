"""The architecture's rules, checked on the source: no import cycle between modules, the library never imports
configs/, modules stay short enough to read, and a model's name is spelled only in its registry entry."""
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
