"""Cluttered Fashion-MNIST on a laptop CPU: the embedded demo.

Command (what `make demo` runs):
  python launch.py --config=configs/demo.py --workdir=workdirs/demo
  python launch.py --config=configs/demo.py:model=ff_cnn --workdir=workdirs/demo_ffcnn   # plain CNN baseline
  python launch.py --config=configs/demo.py:model=ff_cnn_at --workdir=workdirs/demo_ffcnn_at  # FF-CNN-AT

Variants: `configs/demo.py:model=NAME` with NAME in rsrnn (default) | base_retina | dram | gfnet_m | s3ta |
ff_cnn (docs/zoo.md), all at demo widths on the same narrow backbone, and ff_cnn_at (= ff_cnn with PGD
adversarial training at ε = 0.03, 5 iterations, step ε/4: the middle of the demo attack grid 0.01..0.05;
about 6× the compute of a clean FF-CNN step). Any model: `--config.train.adversarial.enabled=True
--config.train.adversarial.eps=0.03` (docs/training_variants.md).
Data: 28×28 Fashion-MNIST items on a 96×96 canvas with clutter fragments (rsrnn_jax/data/cluttered.py),
built from the Debian package dataset-fashion-mnist. Pixels in [0, 1].

Settings: `configs/demo.py:setting=NAME` (combine as `:setting=paper_geometry,model=dram`):
  demo            (default) the 96² canvas above: image : glimpse = 3 : 1.
  paper_geometry  the paper's ImageNet100 proportions (docs/design.md § The paper-geometry setting): a 168² image
                  for the same 32² glimpses (336 : 64 = 5.25 : 1), crops of 0.25 and 0.5 of the side as before,
                  the item drawn 100² (35% of the image: ImageNet's mean object scale 0.358) with the demo's
                  clutter scaled with it (8 fragments of 32²); the whole-image models (S3TA, FF-CNN) see the image
                  resized to 112² (the paper's 224 : 336). Glimpse models cost what they cost in the demo.
Expected result (2 CPU cores, 2 fake XLA devices; see README for the measured numbers): RS-RNN reaches
about 78% test accuracy on the full 10k test set at step 4 and step 8 (four seeds: 77.9–78.6% at step 4,
77.7–78.6% at step 8; the first, central glimpse alone 69.4–69.8%) in about 11 minutes of training.
"""
from configs import common
from rsrnn_jax.models import registry

DEMO_STAGES = ((16, 1, 1), (32, 1, 1), (64, 1, 1), (64, 1, 0))


SETTINGS = ("demo", "paper_geometry")


def get_config(arg: str = ""):
  args = common.parse_args(arg, "configs/demo.py", keys=("model", "attack", "setting"))
  setting = args.get("setting", "demo")
  if setting not in SETTINGS:
    raise ValueError(f"unknown setting {setting!r}; choose one of {', '.join(SETTINGS)}")
  variant = registry.variant(args.get("model", registry.DEFAULT_MODEL))  # a model, or e.g. ff_cnn_at
  model = registry.get(variant.model)
  c = common.get_base_config()
  c.data.canvas_size = 96
  c.data.mean, c.data.std = (0.05,), (0.19,)  # measured on the training split

  # Every model on the same narrow backbone (16-32-64-64, one conv per stage; pools after stages 1–3).
  common.set_model(c, model.name, stages=DEMO_STAGES, out_size=32, density_ratio=10.0)
  if not model.whole_image:                                # whole-image models keep BatchNorm
    c.model.norm = "none"                                    # fastest on 2 CPU cores; 5 convs need no norm
  # rsrnn: Encoder1 16-32-64 (32×32 glimpse → 4×4×64), ConvGRU 64 channels at 4×4, Encoder2 64.
  # base_retina / dram / gfnet_m: the four stages on each 32×32 glimpse (→ 4×4×64), GRU(64).
  c.model.ior_size = 24
  c.model.dorsal.saliency_size = 8
  c.model.dorsal.hidden = 32
  if "attention" in c.model:  # s3ta
    # The backbone on the whole canvas → 12×12×64; keys 16 + 16 basis, values 64 + 16 basis, LSTM 64.
    c.model.attention.basis_size = 4
  else:
    c.model.stages = DEMO_STAGES[:3] + ((64, 1, 1),)         # ff_cnn: whole 96×96 canvas → 6×6×64

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

  if variant.adversarial:  # ff_cnn_at, the paper's FF-CNN-AT (v1 Fig. 4a; recipe not given): PGD-AT at demo-scale ε
    c.train.adversarial = common.adversarial_training(enabled=True, eps=0.03)

  c.eval.num_glimpses = 8
  c.eval.batch_size = 500

  # Adversarial evaluation (--mode=attack; rsrnn_jax/robustness/suite.py). Profile: `configs/demo.py:attack=NAME`,
  # NAME = paper (default) | strong | adaptive (docs/attacks.md; combine as `:model=ff_cnn,attack=adaptive`).
  # Output: WORKDIR/attack_<profile>/; `--mode=verify` re-scores its saved adversarial sets.
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
  if c.attack.profile == "adaptive":                # ≥ 500 images at ε 0.02/0.03 in ~20 min on 2 idle cores
    c.attack.num_examples = 500                     # (docs/attacks.md: the budget and how it was estimated)
    c.attack.epsilons = (0.02, 0.03)
    c.attack.batch_size = 50                        # the robust flags leave few examples: small padded batches
    c.attack.num_iterations = 50                    # AutoAttack: 100; check 3 runs 100 × 3 restarts on the rest
    c.attack.horizon_iterations = ("avg:100", "full:100")  # but 100 on the means over steps: with 50 their
                                                    # steps stayed above the strong profile's (docs/attacks.md)
    c.attack.policy.taus = (0.5, 2.0)
    c.attack.policy.candidates = 4
    c.attack.targeted = False
    c.attack.prob_map.num_images = 4
    c.attack.checks.large_eps_examples = 100
    c.attack.checks.convergence_examples = 0        # every example the cascade left robust
    c.attack.checks.square_queries = 1000
  if setting == "paper_geometry":
    paper_geometry(c, model)
  if c.attack.profile == "strong":                  # ~1 h on 2 cores: 100 it × 2 restarts × 2 losses × 3 objectives
    c.attack.num_examples = 100
    c.attack.epsilons = (0.01, 0.03)
    c.attack.targeted_epsilons = (0.05,)
    c.attack.prob_map.num_images = 4
    c.attack.checks.convergence_examples = 100
    c.attack.checks.square_queries = 1000
  return c


def paper_geometry(c, model) -> None:
  """The paper's proportions on the demo's models (docs/design.md § The paper-geometry setting)."""
  c.data.canvas_size = 168                          # 168 : 32 = 336 : 64, the paper's image : glimpse
  c.data.item_size = 100                            # 100² / 168² = 0.354 ≈ ImageNet's mean object scale 0.358
  c.data.num_clutter, c.data.clutter_size = 8, 32   # the demo's 8 fragments of 9/28 of an item, scaled with it
  c.data.mean, c.data.std = (0.19,), (0.32,)        # measured on the training split
  if model.whole_image:
    c.model.input_size = 112                        # the paper's 224² for 336² glimpse-model images
