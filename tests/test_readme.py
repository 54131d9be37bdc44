"""README.md is a guide whose numbers come from committed files: its generated tables match their sources
(tools/readme_tables.py --check), it stays within its line budget, its relative links resolve, and its layout
section lists the package tree as it is."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MAX_LINES = 250


def _tables():
  spec = importlib.util.spec_from_file_location("readme_tables", os.path.join(ROOT, "tools", "readme_tables.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _readme() -> str:
  with open(README) as f:
    return f.read()


def test_readme_tables_match_their_result_files():
  diff = _tables().check(README)
  assert not diff, "README.md is stale; run `python tools/readme_tables.py`:\n" + "".join(diff)


def test_readme_has_every_generated_block():
  names = re.findall(r"<!-- table:([a-z_]+) -->", _readme())
  assert sorted(names) == sorted(_tables().RENDERERS)


def test_check_fails_on_a_hand_edited_table(tmp_path):
  text = _readme()
  rendered = _tables().render(text)
  accuracy = json.load(open(os.path.join(ROOT, "docs", "results", "demo_eval.json")))["accuracy_per_step"]
  cell = f"| test accuracy (%) | {100 * accuracy[0]:.2f} |"
  assert rendered.count(cell) == 1
  stale = tmp_path / "README.md"
  stale.write_text(rendered.replace(cell, "| test accuracy (%) | 99.99 |"))
  cli = [sys.executable, os.path.join(ROOT, "tools", "readme_tables.py"), "--readme", str(stale)]
  result = subprocess.run([*cli, "--check"], capture_output=True, text=True)
  assert result.returncode == 1 and "99.99" in result.stdout
  assert subprocess.run(cli).returncode == 0                 # rewriting restores the rendering
  assert stale.read_text() == rendered
  assert subprocess.run([*cli, "--check"]).returncode == 0


def test_demo_table_reads_the_numbers_of_its_file():
  results = {"step": 10, "num_examples": 3, "train_glimpses": 2, "model": "toy",
             "accuracy_per_step": [0.5, 0.75, 0.125],
             "saccades": {"mean_saccade_px": [12.34, 1.0], "fraction_moving": [1.0, 0.5]},
             "config": {"seed": 7, "train": {"batch_size": 4}, "data": {"name": "toy_data"}}}
  lines = _tables().render_demo(results)
  assert "seed 7" in lines[0] and "10 training steps of 4 images" in lines[0] and "toy_data" in lines[0]
  assert lines[2] == "| glimpse step | 1 | **2** | 3 |"
  assert lines[4] == "| test accuracy (%) | 50.00 | **75.00** | 12.50 |"
  assert lines[5] == "| saccade to the next fixation (px) | 12.3 | 1.0 | – |"
  assert lines[6] == "| fixations that move > 1 px next | 100% | 50% | – |"


def test_unknown_block_is_a_one_line_error(tmp_path):
  bad = tmp_path / "README.md"
  bad.write_text("<!-- table:nonesuch -->\n<!-- /table -->\n")
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "readme_tables.py"), "--readme", str(bad),
                           "--check"], capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0 and "nonesuch" in result.stderr


def test_readme_within_line_budget():
  assert len(_readme().splitlines()) <= MAX_LINES


def test_relative_links_resolve():
  targets = re.findall(r"\]\(([^)\s]+)\)", _readme())
  local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
  assert local, "no relative links found"
  missing = [t for t in local if not os.path.exists(os.path.join(ROOT, t))]
  assert not missing, f"README.md links to missing files: {missing}"


def _layout_paths() -> list[str]:
  """The paths the "## Layout" code block names: top-level lines are paths from the repository root, indented
  lines are files inside the last top-level folder."""
  block = re.search(r"^## Layout\n+```\n(.*?)```", _readme(), re.S | re.M)
  assert block, "README.md has no ## Layout code block"
  paths, folder = [], ""
  for line in block.group(1).splitlines():
    if not line.strip():
      continue
    name = line.split()[0]
    if line.startswith(" "):
      paths.append(folder + name)
    else:
      folder = name if name.endswith("/") else ""
      paths.append(name)
  return paths


def test_layout_names_only_existing_paths():
  missing = [p for p in _layout_paths() if not os.path.exists(os.path.join(ROOT, p))]
  assert not missing, f"README.md's layout names paths that do not exist: {missing}"


@pytest.mark.parametrize("kind", ["packages", "modules"])
def test_layout_lists_every_package_and_module(kind):
  listed = set(_layout_paths())
  expected = set()
  for folder, _, files in os.walk(os.path.join(ROOT, "rsrnn_jax")):
    rel = os.path.relpath(folder, ROOT) + "/"
    if "__init__.py" not in files:
      continue
    if kind == "packages":
      expected.add(rel)
    else:
      expected.update(rel + f for f in files if f.endswith(".py") and not f.startswith("__"))
  assert not expected - listed, f"README.md's layout does not list: {sorted(expected - listed)}"
