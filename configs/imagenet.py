"""ImageNet100 at the paper's settings (paper.md §4, §6, §9).

Command (4 GPUs on one host, or many hosts under Slurm: one process per host):
  python launch.py --config=configs/imagenet.py --workdir=gs://bucket/rsrnn_in100
  python launch.py --config=configs/imagenet.py --workdir=... --mode=eval

Variants: `configs/imagenet.py:model=NAME` (rsrnn | base_retina | dram | gfnet_m | s3ta | ff_cnn; docs/zoo.md).
Data: the official ILSVRC2012 tars in the TFDS manual dir (~/tensorflow_datasets/downloads/manual/);
rsrnn_jax/data/imagenet100.py keeps the paper's 100 classes. Input 336² (224² for FF-CNN and S3TA), glimpses
64², b = 10; crops 0.25 (and 0.5 for DRAM) of the image side.
Model: VGG-8 split as Encoder1 = blocks 1–3 (→ 8×8×256), ConvGRU(256, 3×3) at 8×8, Encoder2 = block 4 (512),
GAP, FC(100). Training T = 4 glimpses, evaluation T = 16. SGD 0.9, lr 0.1·B/256, wd 1e-4, 120 epochs, ×0.1 at
epochs 80 and 110 (the authors' run name `lrAdje80e110`).
Expected result: the paper reports 81.94% top-1 for RS-RNN (AAAI draft, Table 1); not reproduced here (no GPU).
"""
from configs import common
from rsrnn_jax.models import registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_IMAGES = 126689  # ImageNet100 train split size with the paper's class list (~1,267 per class)


def get_config(arg: str = ""):
  args = common.parse_args(arg, "configs/imagenet.py")
  model = args.get("model", registry.DEFAULT_MODEL)
  c = common.get_base_config("imagenet100")
  whole_image = registry.get(model).whole_image  # 224² (S3TA ≈ the FF-CNN backbone once: 10.47 GMACs, paper.md §5)
  c.data.image_size = 224 if whole_image else 336
  c.data.eval_resize = 256 if whole_image else 384
  c.data.num_workers = 16
  c.data.prefetch = 4
  c.data.mean, c.data.std = IMAGENET_MEAN, IMAGENET_STD

  common.set_model(c, model, width=64, out_size=64, density_ratio=10.0)
  c.model.dtype = "bfloat16"   # bf16 compute; params, optimiser state and losses stay float32
  # Each host compiles the full model (minutes on GPU); a restart after preemption reuses the executables from
  # c.compilation_cache_dir (common.py: on by default, local to each host).

  c.train.batch_size = 256
  epochs = 120
  c.train.num_train_steps = epochs * TRAIN_IMAGES // c.train.batch_size
  c.train.num_glimpses = 4
  c.train.optimizer = "sgd"
  c.train.learning_rate = 0.1 * c.train.batch_size / 256
  c.train.schedule = "step"
  c.train.lr_boundaries = (80 / 120, 110 / 120)
  c.train.warmup_steps = 5 * TRAIN_IMAGES // c.train.batch_size
  c.train.weight_decay = 1e-4
  c.train.log_every = 100
  c.train.checkpoint_every = 2000

  c.eval.num_glimpses = 16
  c.eval.batch_size = 256
  c.attack = common.attack_profile(args.get("attack", "paper"))  # --mode=attack profile: paper | strong | adaptive
  return c
