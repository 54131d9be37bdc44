"""MS-COCO 2014 multi-label classification (80 classes) at the paper's settings (paper.md §6, §9).

Command (GPUs/TPUs; one process per host on a cluster):
  python launch.py --config=configs/coco.py --workdir=gs://bucket/rsrnn_coco
  python launch.py --config=configs/coco.py --workdir=... --mode=eval    # mAP, CP/CR/CF1, OP/OR/OF1 per step

Variants: `configs/coco.py:model=NAME` (rsrnn | ff_cnn), as configs/imagenet.py.
Data: train2014.zip, val2014.zip and annotations_trainval2014.zip (images.cocodataset.org, the files of the stock
TFDS coco/2014 builder) in the TFDS manual dir (~/tensorflow_datasets/downloads/manual/ or --config.data.manual_dir);
rsrnn_jax/data/coco.py builds `coco_multilabel` (every image of train 82,783 / val 40,504, multi-hot targets).
Train RandomResizedCrop + flip at 336² (224² FF-CNN); eval the whole image resized to 336² (authors' loader).
Model, optimiser and schedule: those of configs/imagenet.py (VGG-8 RS-RNN, retina 64², b = 10, T = 4 train /
16 eval, SGD 0.9, lr 0.1·B/256, wd 1e-4, 120 epochs, ×0.1 at epochs 80 and 110), with 80 output classes,
the sigmoid cross-entropy (BCE-with-logits) as the loss and, for the fixation policy, the example's F1 at each
step as the reward. Metrics: threshold 0.5 on the sigmoid (rsrnn_jax/evaluation/multilabel.py).
Expected result: the paper reports no MS-COCO numbers (the authors' README only shows RS-RNN fixations on COCO),
so there is nothing to reproduce; not run here (no GPU). Checks without data: tests/test_coco.py trains and
evaluates this config (tiny model) on fake COCO zips and reads the data set under tfds.testing.mock_data.
"""
from configs import imagenet
from rsrnn_jax import data

TRAIN_IMAGES = 82783  # COCO-2014 train, every image


def get_config(arg: str = ""):
  c = imagenet.get_config(arg)
  sizes = {k: c.data[k] for k in ("image_size", "eval_resize", "num_workers", "prefetch", "mean", "std")}
  c.data = data.default_data_config("coco_multilabel")
  c.data.update(sizes)
  epochs = 120
  c.train.num_train_steps = epochs * TRAIN_IMAGES // c.train.batch_size
  c.train.warmup_steps = 5 * TRAIN_IMAGES // c.train.batch_size
  return c
