"""``--deadline`` (rsrnn_jax/reproduction/deadline.py): a stage starts only if it should end by then; the first
that would not stops the command, with nothing written for it."""
import datetime
import logging
import os

import pytest

from rsrnn_jax.reproduction import deadline as D
from rsrnn_jax.reproduction import jobs as J
from rsrnn_jax.reproduction import run as R
from rsrnn_jax.reproduction import runs as RUNS
from rsrnn_jax.reproduction import settings as S
from rsrnn_jax.reproduction import stages as STAGES
from tests.reproduce_helpers import FakeStages

DEMO = S.get("demo")
RECORDED = {"train": 600.0, "eval": 60.0, "attack_paper": 120.0, "attack_adaptive": 3000.0}  # seed 0's times


def test_the_forms_of_a_deadline():
  now = datetime.datetime(2026, 12, 7, 14, 0).timestamp()
  at = lambda text: datetime.datetime.fromtimestamp(D.parse(text, now))
  assert at("15:08") == datetime.datetime(2026, 12, 7, 15, 8)
  assert at("9:30") == datetime.datetime(2026, 12, 8, 9, 30)          # past today: tomorrow
  assert D.parse("+2h30m", now) - now == 9000 and D.parse("+90m", now) - now == 5400
  assert D.parse("+1.5h", now) - now == 5400
  assert at("2026-12-07T16:45") == datetime.datetime(2026, 12, 7, 16, 45)
  assert D.parse(D.iso(now + 3600), now) == now + 3600                  # what --jobs hands each job
  for bad in ("soon", "25:00", "15:61", "+0m", "+", "+2d", ""):
    with pytest.raises(ValueError, match="--deadline expects HH:MM"):
      D.parse(bad, now)


@pytest.mark.parametrize("argv, message", [
    (["--deadline", "tonight"], "--deadline expects HH:MM"),
    (["--deadline", "+1h", "--report_only"], "--deadline and --report_only exclude each other"),
])
def test_a_bad_deadline_exits_2_with_one_line(tmp_path, capsys, argv, message):
  assert R.main(["--out", str(tmp_path / "out"), "--quick", *argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / "out")


class Clock:
  """The time now, moved on by each fake stage by what seed 0 recorded for it."""

  def __init__(self):
    self.now = 1_000_000.0

  def __call__(self):
    return self.now

  def fns(self, fake):
    def timed(kind, fn):
      def call(config, run_dir, **kw):
        fn(config, run_dir, **kw)
        self.now += RECORDED["attack_" + config.attack.profile if kind == "attack" else kind]
      return call
    return {k: timed(k, fn) for k, fn in fake.fns().items()}


def _recorded(out, monkeypatch, fake, seeds=(0,)):
  monkeypatch.setattr(R, "STAGE_FNS", fake.fns())
  R.reproduce(out, R.QUICK_BUDGET, ("rsrnn",), seeds=seeds, report=False, setting=DEMO)
  for seed in seeds:
    run = RUNS.run_dir(out, "rsrnn", seed)
    records = STAGES.read_stages(run)
    for stage, seconds in RECORDED.items():
      records[stage]["seconds"] = seconds
    STAGES.write_stages(run, records)
  fake.calls.clear()


def test_a_stage_that_would_end_past_the_deadline_does_not_start_and_stops_the_command(tmp_path, monkeypatch,
                                                                                        caplog):
  out, fake, clock = str(tmp_path / "demo"), FakeStages(), Clock()
  _recorded(out, monkeypatch, fake)
  monkeypatch.setattr(R, "STAGE_FNS", clock.fns(fake))
  caplog.set_level(logging.INFO, logger="rsrnn_jax")
  seed1 = RUNS.run_dir(out, "rsrnn", 1)
  deadline = D.Deadline(clock.now + 700, clock)  # train (600 s) and eval (60 s) fit, the paper attack does not
  R.reproduce(out, R.QUICK_BUDGET, ("rsrnn",), seeds=(1, 2), report=False, setting=DEMO, deadline=deadline)
  assert fake.calls == ["train", "eval"]                             # seed 2 does not start either
  assert "attack_paper" not in STAGES.read_stages(seed1)             # nothing written for a refused stage
  assert deadline.stopped == "before rsrnn/seed1 attack_paper"
  assert "rsrnn/seed1: attack_paper not started: about 2 min to run, 1 min left before the deadline" in caplog.text
  assert "--deadline: stopped before rsrnn/seed1 attack_paper; the same command goes on from there" in caplog.text
  R.reproduce(out, R.QUICK_BUDGET, ("rsrnn",), seeds=(1,), report=False, setting=DEMO, deadline=deadline)
  assert fake.calls == ["train", "eval"]                             # a stopped command starts nothing more
  R.reproduce(out, R.QUICK_BUDGET, ("rsrnn",), seeds=(1,), report=False, setting=DEMO,
              deadline=D.Deadline(clock.now + 3200, clock))         # the same command, a later deadline
  assert fake.calls == ["train", "eval", "attack_paper", "attack_adaptive"]
  assert all(rec["done"] for rec in STAGES.read_stages(seed1).values())


def test_a_resumed_stage_counts_only_what_it_has_left_and_a_stage_never_timed_starts(tmp_path, monkeypatch):
  out, fake, clock = str(tmp_path / "demo"), FakeStages(), Clock()
  _recorded(out, monkeypatch, fake, seeds=(0, 1))
  budget = DEMO.budget(R.QUICK_BUDGET)
  configs = R.plan(budget, ("rsrnn",), (1,), {}, R.DEMO_CONFIG, out, DEMO)["rsrnn"][1]
  run = RUNS.run_dir(out, "rsrnn", 1)
  records = STAGES.read_stages(run)
  records["attack_adaptive"].update(done=False, seconds=2900.0)    # cut off with 100 s of seed 0's 3,000 left ...
  STAGES.write_stages(run, records)

  def run_with(left):
    fake.calls.clear()
    deadline = D.Deadline(clock.now + left, clock)
    STAGES.run_model("rsrnn/seed1", configs, run, fake.fns(), budget.plateau_examples,
                     may_start=lambda stage, ran: deadline.refuses(out, "rsrnn", 1, stage, ran))
    return fake.calls

  assert run_with(50) == []                                        # ... more than 50 s
  os.makedirs(os.path.join(run, ".attack_adaptive.journal"))      # ... but it resumes from its journal
  assert run_with(150) == ["attack_adaptive"]
  fresh = str(tmp_path / "fresh")                                  # no recorded times: every stage starts
  soon = D.Deadline(clock.now + D.todo.TRAIN_MIN_S, clock)           # (a training given time for a checkpoint)
  STAGES.run_model("rsrnn/seed1", configs, RUNS.run_dir(fresh, "rsrnn", 1), fake.fns(), budget.plateau_examples,
                   may_start=lambda stage, ran: soon.refuses(fresh, "rsrnn", 1, stage))
  assert fake.calls == ["attack_adaptive", "train", "eval", "attack_paper", "attack_adaptive"]
  assert "has passed" in D.Deadline(clock.now - 1, clock).refuses(fresh, "rsrnn", 0, "train")
  never = str(tmp_path / "never")                                  # a training never timed needs 15 min too
  assert "a training starts with 15 min or more" in D.Deadline(clock.now + 60, clock).refuses(never, "rsrnn", 0,
                                                                                               "train")


def test_a_training_that_would_end_past_the_deadline_stops_at_a_checkpoint_and_the_same_command_resumes(
    tmp_path, monkeypatch, caplog):
  out, fake, clock = str(tmp_path / "demo"), FakeStages(), Clock()
  _recorded(out, monkeypatch, fake)
  seed0 = RUNS.run_dir(out, "rsrnn", 0)
  records = STAGES.read_stages(seed0)
  records["train"]["seconds"] = 3600.0                             # an hour to train, 20 min left
  STAGES.write_stages(seed0, records)
  fake.stop_train = True
  monkeypatch.setattr(R, "STAGE_FNS", clock.fns(fake))
  caplog.set_level(logging.INFO, logger="rsrnn_jax")
  seed1 = RUNS.run_dir(out, "rsrnn", 1)
  deadline = D.Deadline(clock.now + 1200, clock)
  R.reproduce(out, R.QUICK_BUDGET, ("rsrnn",), seeds=(1, 2), report=False, setting=DEMO, deadline=deadline)
  assert fake.calls == ["train"]                                     # eval, and seed 2, wait
  rec = STAGES.read_stages(seed1)["train"]
  assert not rec["done"] and rec["seconds"] >= 0 and STAGES.resumes_from("train", seed1) == "step 2"
  assert deadline.stopped == "in rsrnn/seed1 train, at its last checkpoint before the deadline"
  assert "rsrnn/seed1: train stopped after" in caplog.text and "resumes from step 2" in caplog.text
  assert "a training starts with 15 min or more" in D.Deadline(clock.now + 600, clock).refuses(out, "rsrnn", 1,
                                                                                                "train")
  fake.stop_train = False
  R.reproduce(out, R.QUICK_BUDGET, ("rsrnn",), seeds=(1,), report=False, setting=DEMO,
              deadline=D.Deadline(clock.now + 10_000, clock))       # the same command, a later deadline
  assert fake.calls == ["train", "train", "eval", "attack_paper", "attack_adaptive"]
  assert "rsrnn/seed1: train (resuming from step 2)" in caplog.text
  assert all(rec["done"] for rec in STAGES.read_stages(seed1).values())


def test_what_starts_before_a_deadline():
  fit = D.todo.fitting
  assert fit(["eval", "attack_paper"], [60, 120], 100) == (1, False)
  assert fit(["train", "eval"], [3600, 60], 1000) == (1, True)        # a training stops at the deadline
  assert fit(["eval", "train"], [60, 3600], 1000) == (2, True)
  assert fit(["eval", "train"], [60, 3600], 900) == (1, False)        # under 15 min left for the training
  assert fit(["train", "eval"], [None, None], 60) == (0, False)       # a training never timed needs 15 min too
  assert fit(["eval", "train"], [None, 600], 1000) == (2, False)


def test_dry_run_says_how_many_stages_start_before_the_deadline(tmp_path, monkeypatch):
  out, fake = str(tmp_path / "demo"), FakeStages()
  _recorded(out, monkeypatch, fake)
  dry = lambda left: R.dry_run(out, R.QUICK_BUDGET, ("rsrnn",), (1,), {}, R.DEMO_CONFIG, None, (), DEMO, left,
                               "2026-12-07T15:08:00")
  text, left = dry(700)
  assert text.splitlines()[0].endswith("; with --deadline 2026-12-07T15:08:00: the first 2 start")
  assert left < 0                                                  # stopped here: a next setting starts nothing
  text, left = dry(5000)
  assert text.splitlines()[0].endswith("the first 4 start") and left == 5000 - sum(RECORDED.values())
  never = lambda left: R.dry_run(str(tmp_path / "none"), R.QUICK_BUDGET, ("rsrnn",), (0,), {}, R.DEMO_CONFIG,
                                 None, (), DEMO, left, "15:08")[0].splitlines()[0]
  assert never(900).endswith("the first 4 start (4 without a recorded time: they may not end by then)")
  assert never(60).endswith("the first 0 start")                   # a training needs 15 min to reach a checkpoint
  assert dry(None)[0].splitlines()[0].startswith("demo: 4 stage(s) to run, about 1.1 h; times recorded on")
  records = STAGES.read_stages(RUNS.run_dir(out, "rsrnn", 0))
  records["train"]["seconds"] = 3600.0
  STAGES.write_stages(RUNS.run_dir(out, "rsrnn", 0), records)
  text, left = dry(1000)
  assert text.splitlines()[0].endswith("the first 1 start, the last a training that stops at its last checkpoint "
                                       "before then") and left < 0


def test_every_job_gets_the_deadline(tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(J, "run_jobs", lambda phases, launcher, *a, **k: seen.append(launcher.common) or [])
  assert R.main(["--out", str(tmp_path), "--quick", "--setting", "demo", "--models", "rsrnn", "--jobs", "2",
                 "--no_report", "--deadline", "+2h"]) == 0
  common = seen[0]
  at = D.parse(common[common.index("--deadline") + 1])
  assert abs(at - (datetime.datetime.now().timestamp() + 7200)) < 60
