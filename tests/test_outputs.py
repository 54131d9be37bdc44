"""Result folders written whole or not at all (rsrnn_jax/outputs.py) and what --mode=verify makes of them
(issue 26): an interrupted attack leaves the old folder as it was, a killed one leaves nothing that confuses
the next run, and a folder whose files come from different runs (or from before manifests) is refused."""
import logging
import os

import ml_collections
import numpy as np
import pytest

from rsrnn_jax import outputs
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.robustness import verify


def _write_run(folder: str, run_id: str, value: float) -> None:
  """A finished attack run's files (as suite.run writes them) for ``run_id``."""
  with outputs.staged_folder(folder, run_id) as staging:
    for eps in (0.01, 0.05):
      np.savez(os.path.join(staging, verify.set_name(eps)), images=np.full((2, 3), value), run_id=run_id)
    workdir_lib.write_json(os.path.join(staging, "results.json"), {"run_id": run_id, "value": value})
    workdir_lib.write_text(os.path.join(staging, "report.md"), f"# {value}\n")


def _contents(folder: str) -> dict:
  return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def _verify_config(path=""):
  return ml_collections.ConfigDict({"verify": {"path": path}})


def test_a_folder_is_swapped_in_whole_with_a_manifest_of_one_run(tmp_path):
  folder = str(tmp_path / "attack_paper")
  _write_run(folder, "run-a", 1.0)
  _write_run(folder, "run-b", 2.0)
  manifest = outputs.read_manifest(folder)
  assert manifest["run_id"] == "run-b" and sorted(manifest["files"]) == sorted(
      ["adversarial_eps0.01.npz", "adversarial_eps0.05.npz", "report.md", "results.json"])
  assert outputs.check_manifest(folder) == "run-b"
  assert os.listdir(tmp_path) == ["attack_paper"]  # no sibling left


@pytest.mark.parametrize("stop", [KeyboardInterrupt, workdir_lib.Interrupted, OSError])
def test_a_run_stopped_while_it_writes_leaves_the_folder_unchanged(tmp_path, stop):
  folder = str(tmp_path / "attack_paper")
  _write_run(folder, "run-a", 1.0)
  before = _contents(folder)
  with pytest.raises(stop):
    with outputs.staged_folder(folder, "run-b") as staging:
      np.savez(os.path.join(staging, verify.set_name(0.01)), images=np.zeros((2, 3)), run_id="run-b")
      raise stop(15) if stop is workdir_lib.Interrupted else stop()
  assert _contents(folder) == before and os.listdir(tmp_path) == ["attack_paper"]
  assert outputs.check_manifest(folder) == "run-a"


def test_what_a_killed_run_left_is_cleaned_by_the_next_and_ignored_by_verify(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  folder = str(tmp_path / "attack_paper")
  _write_run(folder, "run-a", 1.0)
  stale = tmp_path / "attack_paper.tmp-run-x"  # kill -9 while writing
  stale.mkdir()
  (stale / "results.json").write_text("{}")
  os.utime(stale / "results.json", (2e9, 2e9))  # newer than the real one
  assert verify.locate(_verify_config(), str(tmp_path)) == sorted(
      os.path.join(folder, verify.set_name(e)) for e in (0.01, 0.05))
  assert any("ignoring" in r.getMessage() and "tmp-run-x" in r.getMessage() for r in caplog.records)
  _write_run(folder, "run-b", 2.0)
  assert not stale.exists() and any("removing" in r.getMessage() for r in caplog.records)
  os.rename(folder, str(tmp_path / "attack_paper.old-run-c"))  # kill -9 between the two renames
  outputs.recover(folder)
  assert outputs.check_manifest(folder) == "run-b" and os.listdir(tmp_path) == ["attack_paper"]


def test_verify_refuses_files_from_different_runs_and_folders_without_a_manifest(tmp_path):
  a, b = str(tmp_path / "a" / "attack_paper"), str(tmp_path / "b" / "attack_paper")
  _write_run(a, "run-a", 1.0)
  _write_run(b, "run-b", 2.0)
  name = verify.set_name(0.05)
  os.replace(os.path.join(b, name), os.path.join(a, name))  # the mixed folder
  with pytest.raises(workdir_lib.UserError, match=rf"{name} differs from manifest.json \(run run-a\): its files "
                                                  "come from different runs"):
    verify.locate(_verify_config(a), "")
  with pytest.raises(workdir_lib.UserError, match="come from different runs"):
    verify.locate(_verify_config(os.path.join(a, name)), "")
  with pytest.raises(workdir_lib.UserError, match=f"{name} is missing"):
    verify.locate(_verify_config(b), "")
  np.savez(os.path.join(b, verify.set_name(0.02)), images=np.zeros(1))
  with pytest.raises(workdir_lib.UserError, match="adversarial_eps0.02.npz is not in manifest.json"):
    outputs.check_manifest(b)
  os.remove(os.path.join(a, outputs.MANIFEST))  # a folder written before manifests
  with pytest.raises(workdir_lib.UserError, match="has no manifest.json: it was written before .*run "
                                                  "--mode=attack again") as info:
    verify.locate(_verify_config(a), "")
  assert "\n" not in str(info.value)
  with open(os.path.join(b, outputs.MANIFEST), "w") as f:
    f.write('{"run_id": "x", "fil')  # half-written
  with pytest.raises(workdir_lib.UserError, match="manifest.json is damaged"):
    outputs.check_manifest(b)


def test_a_set_whose_run_id_is_not_the_folders_is_refused(tmp_path):
  folder = str(tmp_path / "attack_paper")
  _write_run(folder, "run-a", 1.0)
  path = os.path.join(folder, verify.set_name(0.01))
  with pytest.raises(workdir_lib.UserError, match="written by run run-b .* is run run-a: its files come from"):
    verify._check_run_id(path, {"run_id": np.asarray("run-b")})
  verify._check_run_id(path, {"run_id": np.asarray("run-a")})
