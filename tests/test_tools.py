"""The analysis tools of tools/ on a tiny trained run: the ε pilot (docs/reproduction.md) and the fixation hits
(docs/zoo.md)."""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from rsrnn_jax import run
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  c = tiny_config("gfnet_m", **{"train.num_train_steps": 2, "train.learning_rate": 1e-2})
  c.data.source_dir, c.data.data_dir = tiny_data["source_dir"], tiny_data["data_dir"]
  workdir = str(tmp_path_factory.mktemp("tools") / "work")
  run.main(c, workdir, "train")
  return workdir


def test_eps_pilot_reads_accuracy_under_the_paper_attack_per_eps(trained, tmp_path):
  out = str(tmp_path / "pilot.json")
  assert _tool("eps_pilot").main([trained, "--eps", "0,0.5", "--examples", "8", "--batch", "8", "--out", out]) == 0
  r = json.load(open(out))
  assert r["examples"] == 8 and [e["eps"] for e in r["per_eps"]] == [0.0, 0.5]
  zero, big = r["per_eps"]
  assert zero["acc_k"] == r["clean_k"] and zero["acc_T"] == r["clean_T"]  # ε = 0 changes nothing
  assert big["acc_k"] <= r["clean_k"]


def test_fixation_hits_reports_every_step(trained, tmp_path):
  out = str(tmp_path / "hits.json")
  assert _tool("fixation_hits").main([trained, "--examples", "16", "--steps", "3", "--out", out]) == 0
  r = json.load(open(out))
  assert r["model"] == "gfnet_m" and r["glance"] and [s["step"] for s in r["per_step"]] == [1, 2, 3]
  assert all(0.0 <= s["hit"] <= 1.0 and s["distance_px"] >= 0 for s in r["per_step"])


def test_policy_value_compares_the_policy_with_fixed_and_random_fixations(trained, tmp_path):
  tool = _tool("policy_value")
  out = str(tmp_path / "value.json")
  assert tool.main([trained, "--examples", "16", "--steps", "3", "--out", out]) == 0
  r = json.load(open(out))
  acc = r["accuracy_per_step"]
  assert r["model"] == "gfnet_m" and r["examples"] == 16 and set(acc) == {"policy", "centre", "random"}
  assert all(len(v) == 3 and all(0.0 <= a <= 1.0 for a in v) for v in acc.values())
  assert acc["policy"][0] == acc["centre"][0] == acc["random"][0]  # every way starts at the centre
  fix, mask = tool.forced_fixations("random", 3, 5, seed=1)
  assert mask.all() and not fix[0].any() and np.abs(fix[1:]).max() <= 0.9 and len(np.unique(fix[1:, :, 0])) == 10
  assert not tool.forced_fixations("centre", 3, 5, seed=1)[0].any() and tool.forced_fixations("policy", 3, 5, 1) is None


def test_policy_value_refuses_a_model_without_fixations(monkeypatch, capsys):
  import types
  tool = _tool("policy_value")
  monkeypatch.setattr(tool, "load", lambda workdir: types.SimpleNamespace(config=tiny_config("ff_cnn")))
  assert tool.main(["some/ff_cnn/run"]) == 2
  assert capsys.readouterr().err.count("\n") == 1  # one line that says what to do


def test_fixation_hits_counts_the_fixations_whose_window_holds_the_item_centre():
  """tools/fixation_hits.py (docs/zoo.md's GF-Net-m measurement): fixation (x, y) in [-1, 1] → pixels, against
  the item's (row, col) corner + half its side."""
  tool = _tool("fixation_hits")
  position = np.array([[10, 60], [0, 0]])                    # items 20 px wide on a 100-px image
  fix = np.array([[[0.4, -0.6], [0.4, -0.6]]])                # (x, y) = (70, 20) px: the first item's centre
  inside, dist = tool.hits(fix, position, 20, 100, half=5.0)
  np.testing.assert_array_equal(inside, [[True, False]])
  np.testing.assert_allclose(dist, [[0.0, np.hypot(10, 60)]])
  cfg = tiny_config("dram").model
  assert tool.window_half(cfg, 96) == 24.0 and tool.window_half(tiny_config("rsrnn").model, 96) == 12.0


def test_keep_runs_lists_what_the_missing_stages_need(tmp_path):
  tool = _tool("keep_runs")

  def run(name, stages, steps):
    d = tmp_path / "repro" / "demo" / "runs" / name / "seed0"
    for s in steps:
      (d / "checkpoints" / str(s)).mkdir(parents=True)
    (d / "eval").mkdir(parents=True, exist_ok=True)
    (d / "attack_paper").mkdir()
    (d / "attack_paper" / "results.json").write_text("{}")
    (d / "attack_paper" / "adversarial_eps0.01.npz").write_text("")
    (d / "attack_paper.tmp-x").mkdir()
    (d / "tensorboard").mkdir()
    (d / "reproduce_stages.json").write_text(json.dumps({s: {"done": True} for s in stages}))
    (d / "config.json").write_text("{}")
    return str(d)

  fresh = run("rsrnn", ["train"], [260, 2080, 2340, 2600])
  paper_done = run("dram", ["train", "eval", "attack_paper"], [2340, 2600])
  finished = run("ff_cnn", ["train", "eval", "attack_paper", "attack_adaptive"], [2600])
  training = run("s3ta", [], [260])
  kept = set(tool.keep(fresh))
  assert {f"{fresh}/checkpoints/{s}" for s in (2080, 2340, 2600)} <= kept and f"{fresh}/checkpoints/260" not in kept
  assert f"{fresh}/reproduce_stages.json" in kept and f"{fresh}/attack_paper/results.json" in kept
  assert not any("adversarial_" in p for p in kept)
  assert not any("tensorboard" in p or ".tmp" in p for p in kept)
  assert [p for p in tool.keep(paper_done) if "checkpoints" in p] == [f"{paper_done}/checkpoints/2600"]
  assert [p for p in tool.keep(finished) if "checkpoints" in p] == [f"{finished}/checkpoints/2600"]
  assert tool.keep(training) == []                                 # no training record: nothing to resume
  stopped = run("gfnet_m", [], [260, 520, 780, 1040])               # --deadline stopped it at step 1040
  with open(f"{stopped}/reproduce_stages.json", "w") as f:
    json.dump({"train": {"done": False, "seconds": 900.0}}, f)
  kept = tool.keep(stopped)
  assert {f"{stopped}/checkpoints/{s}" for s in (520, 780, 1040)} == {p for p in kept if "checkpoints" in p}
  assert f"{stopped}/reproduce_stages.json" in kept and f"{stopped}/config.json" in kept
  started = run("s3ta_b", [], [])
  with open(f"{started}/reproduce_stages.json", "w") as f:
    json.dump({"train": {"done": False, "seconds": 0.0}}, f)
  assert tool.keep(started) == []                                  # cut off before its first checkpoint
  assert tool.main([str(tmp_path / "repro")]) == 0
  with pytest.raises(SystemExit) as e:  # a folder that is not there: one line, exit 2
    tool.main([str(tmp_path / "missing")])
  assert e.value.code == 2


def test_policy_probe_cuts_the_stage_config_to_check_9_and_attacks_a_scratch_copy(trained):
  from rsrnn_jax.robustness import profiles
  tool = _tool("policy_probe")
  cfg = tool.probe_config("demo", "gfnet_m", 0, 150, 400, [0.02, 0.03])
  a = cfg.attack
  assert a.profile == "adaptive" and a.flags and a.attacks == ("apgd_ce", "bpda", "scanpath")
  assert a.policy.num_iterations == 150 and a.epsilons == (0.02, 0.03) and a.num_examples == 400
  assert a.checks.policy_examples == 50 and cfg.model.name == "gfnet_m" and cfg.seed == 0
  profiles.validate_attack_config(cfg)
  before = sorted(os.listdir(trained))
  work = tool.scratch_copy(trained)
  try:
    steps = sorted(int(s) for s in os.listdir(os.path.join(trained, "checkpoints")) if s.isdigit())
    assert sorted(os.listdir(work)) == ["checkpoints", "config.json"]
    assert os.listdir(os.path.join(work, "checkpoints")) == [str(steps[-1])]
  finally:
    shutil.rmtree(work)
  assert sorted(os.listdir(trained)) == before
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    tool.scratch_copy(os.path.dirname(trained))
