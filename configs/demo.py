"""Cluttered Fashion-MNIST on a laptop CPU: the embedded demo.

Command (what `make demo` runs):
  python launch.py --config=configs/demo.py --workdir=workdirs/demo
  python launch.py --config=configs/demo.py:model=ff_cnn --workdir=workdirs/demo_ffcnn   # plain CNN baseline
  python launch.py --config=configs/demo.py:model=ff_cnn_at --workdir=workdirs/demo_ffcnn_at  # FF-CNN-AT

Variants: `configs/demo.py:model=NAME` with NAME in rsrnn (default) | ff_cnn | ff_cnn_at (= ff_cnn with PGD
adversarial training at ε = 0.03, 5 iterations, step ε/4: the middle of the demo attack grid 0.01..0.05;
about 6× the compute of a clean FF-CNN step). Any model: `--config.train.adversarial.enabled=True
--config.train.adversarial.eps=0.03` (docs/training_variants.md).
Data: 28×28 Fashion-MNIST items on a 96×96 canvas with clutter fragments (rsrnn_jax/data/cluttered.py),
built from the Debian package dataset-fashion-mnist. Pixels in [0, 1].
Expected result (2 CPU cores, 2 fake XLA devices; see README for the measured numbers): RS-RNN reaches
>= 75% last-step test accuracy on the full 10k test set in about 10 minutes of training.
"""
from configs import common


def get_config(arg: str = ""):
  args = dict(kv.split("=", 1) for kv in arg.split(",") if kv)
  variant = args.get("model", "rsrnn")
  model = {"ff_cnn_at": "ff_cnn"}.get(variant, variant)
  c = common.get_base_config()
  c.data.canvas_size = 96
  c.data.mean, c.data.std = (0.05,), (0.19,)  # measured on the training split

  c.model = common.model_preset(model, out_size=32, density_ratio=10.0)
  c.model.norm = "none"                                      # fastest on 2 CPU cores; 5 convs need no norm
  c.model.encoder1 = ((16, 1, 1), (32, 1, 1), (64, 1, 1))    # 32×32 glimpse → 4×4×64
  c.model.core_features = 64                                 # ConvGRU 64 channels at 4×4
  c.model.encoder2 = ((64, 1, 0),)
  c.model.ior_size = 24
  c.model.dorsal.saliency_size = 8
  c.model.dorsal.hidden = 32
  c.model.stages = ((16, 1, 1), (32, 1, 1), (64, 1, 1), (64, 1, 1))  # ff_cnn on the 96×96 canvas
  if model == "ff_cnn":
    c.model.norm = "batch"

  c.train.batch_size = 64
  c.train.num_train_steps = 2600
  c.train.num_glimpses = 4
  c.train.init_fixation = "center"  # learns much faster on small data than a random start (docs/design.md)
  c.train.optimizer = "adamw"
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 100
  c.train.weight_decay = 1e-4
  c.train.log_every = 50
  c.train.checkpoint_every = 500

  if variant == "ff_cnn_at":  # the paper's FF-CNN-AT (v1 Fig. 4a; recipe not given): PGD-AT at a demo-scale ε
    c.train.adversarial = common.adversarial_training(enabled=True, eps=0.03)

  c.eval.num_glimpses = 8
  c.eval.batch_size = 500

  # Adversarial evaluation (--mode=attack; rsrnn_jax/robustness.py). Profile: `configs/demo.py:attack=strong`
  # (default paper; combine as `:model=ff_cnn,attack=strong`). Output: WORKDIR/attack_<profile>/.
  #   python launch.py --config=configs/demo.py --workdir=workdirs/demo --mode=attack
  c.attack = common.attack_profile(args.get("attack", "paper"))
  c.attack.attack_step = 4                          # k = train.num_glimpses (the AAAI setting: attack 4, run more)
  c.attack.eval_steps = 8                           # T_eval = eval.num_glimpses
  c.attack.epsilons = (0.01, 0.02, 0.03, 0.05)      # Fashion-MNIST scale: the paper's ImageNet ε do ~nothing here
  c.attack.targeted_epsilons = (0.02, 0.05)
  c.attack.num_examples = 400                       # whole default run: ~8 min wall, 12 CPU-min (2 cores)
  c.attack.batch_size = 100
  c.attack.prob_map.num_images = 6
  c.attack.prob_map.eps = 0.05
  c.attack.checks.large_eps = 0.3
  c.attack.checks.convergence_examples = 200
  c.attack.checks.square_queries = 300
  c.attack.checks.square_examples = 100
  c.attack.checks.grad_examples = 40
  if c.attack.profile == "strong":                  # ~1 h on 2 cores: 100 it × 2 restarts × 2 losses × 3 objectives
    c.attack.num_examples = 100
    c.attack.epsilons = (0.01, 0.03)
    c.attack.targeted_epsilons = (0.05,)
    c.attack.prob_map.num_images = 4
    c.attack.checks.convergence_examples = 100
    c.attack.checks.square_queries = 1000
  return c
