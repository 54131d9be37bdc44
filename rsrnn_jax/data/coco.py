"""TFDS builder ``coco_multilabel``: MS-COCO 2014 as 80-class multi-label image classification.

The task of the authors' MS-COCO runs (paper.md §6: COCO-2014 train/val, 80 classes, multi-hot targets): an image
is labelled with every object category that has at least one instance annotation in it.

Source (manual download, nothing is fetched): the same three archives the stock TFDS ``coco/2014`` builder reads,
unextracted, under these exact names, in the TFDS manual dir (``<data_dir>/downloads/manual`` unless
``config.data.manual_dir`` says otherwise):
  * ``train2014.zip`` (13.5 GB): ``train2014/COCO_train2014_%012d.jpg``, 82,783 images;
  * ``val2014.zip`` (6.6 GB): ``val2014/COCO_val2014_%012d.jpg``, 40,504 images;
  * ``annotations_trainval2014.zip`` (253 MB): ``annotations/instances_{train,val}2014.json`` (the other JSON
    files in it are not read).
They are the files at http://images.cocodataset.org/zips/{train,val}2014.zip and
http://images.cocodataset.org/annotations/annotations_trainval2014.zip.

Labels: class k is the k-th of the 80 categories in increasing COCO category id (``CATEGORY_IDS``; ids run 1..90
with 10 unused), as in the authors' loader, so ``CLASS_NAMES[k]`` is its name. The instance JSON's category list
must match ``CATEGORY_IDS``/``CLASS_NAMES`` (checked). Every image of the split is kept, in increasing image id,
also the ~1% without any annotation (an all-zero target), as the authors' loader does: train 82,783 and
validation 40,504 examples.

Features: ``image`` (JPEG bytes as stored; grey/CMYK files converted to RGB JPEG), ``label`` (the sorted class
ids present: a ``Sequence`` of ``ClassLabel``, which is what marks the data set as multi-label for the pipeline),
``image_id`` (COCO image id) and ``file_name``.
"""
from __future__ import annotations

import json
import os
import pathlib
import zipfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from rsrnn_jax.data.imagenet100 import find_manual_archives, normalize_jpeg

NAME = "coco_multilabel"
TRAIN_ZIP = "train2014.zip"
VAL_ZIP = "val2014.zip"
ANNOTATIONS_ZIP = "annotations_trainval2014.zip"
ARCHIVES = (TRAIN_ZIP, VAL_ZIP, ANNOTATIONS_ZIP)
SPLIT_DIRS = {"train": "train2014", "validation": "val2014"}
URL = "http://images.cocodataset.org"

CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")
NUM_CLASSES = len(CLASS_NAMES)

MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Download {URL}/zips/{TRAIN_ZIP}, {URL}/zips/{VAL_ZIP} and {URL}/annotations/{ANNOTATIONS_ZIP} (the files "
    f"the stock TFDS coco/2014 builder reads) and put them, unextracted and under these names, in the TFDS manual "
    f"dir (<data_dir>/downloads/manual by default; config.data.manual_dir overrides it).")


def missing_archives_error(manual_dir, missing: list[str]) -> FileNotFoundError:
  return FileNotFoundError(f"coco_multilabel needs the MS-COCO 2014 archives; missing in {manual_dir}: "
                           f"{', '.join(missing)}. {MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _bad_archive(path, what: str) -> ValueError:
  return ValueError(f"coco_multilabel: {path} {what}; replace it with the original {os.path.basename(path)} "
                    f"({MANUAL_DOWNLOAD_INSTRUCTIONS})")


def _open_zip(path: pathlib.Path) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise _bad_archive(path, f"is not a readable zip archive ({e})") from None


def read_instances(annotations_zip: pathlib.Path, split: str) -> tuple[list[dict], dict[int, list[int]]]:
  """(images sorted by id, image id -> sorted class ids) of ``instances_<split>2014.json``."""
  member = f"annotations/instances_{SPLIT_DIRS[split]}.json"
  with _open_zip(annotations_zip) as zf:
    try:
      blob = zf.read(member)
    except KeyError:
      raise _bad_archive(annotations_zip, f"has no {member}") from None
  try:
    instances = json.loads(blob)
    categories = sorted((int(c["id"]), c["name"]) for c in instances["categories"])
    images = sorted(instances["images"], key=lambda im: int(im["id"]))
    annotations = instances["annotations"]
  except (ValueError, KeyError, TypeError) as e:
    raise _bad_archive(annotations_zip, f"holds a malformed {member} ({e!r})") from None
  if tuple(categories) != tuple(zip(CATEGORY_IDS, CLASS_NAMES)):
    raise _bad_archive(annotations_zip, f"{member} does not list the 80 COCO categories")
  class_of = {cid: k for k, cid in enumerate(CATEGORY_IDS)}
  labels: dict[int, set[int]] = {}
  for a in annotations:
    labels.setdefault(int(a["image_id"]), set()).add(class_of[int(a["category_id"])])
  return images, {i: sorted(v) for i, v in labels.items()}


def multi_hot(class_ids, num_classes: int = NUM_CLASSES) -> np.ndarray:
  out = np.zeros((num_classes,), np.int32)
  out[np.asarray(class_ids, np.int64)] = 1
  return out


class CocoMultilabel(tfds.core.GeneratorBasedBuilder):
  """MS-COCO 2014 train/val, 80-class multi-hot labels, from the official zips in the manual dir."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: every image of COCO-2014 train/val, classes in category-id order."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.Sequence(tfds.features.ClassLabel(names=list(CLASS_NAMES))),
            "image_id": np.int64,
            "file_name": tfds.features.Text(),  # e.g. COCO_val2014_000000000042.jpg
        }),
        homepage="https://cocodataset.org/",
        citation=r"""@inproceedings{lin2014coco,
  author    = {Tsung-Yi Lin and Michael Maire and Serge Belongie and James Hays and Pietro Perona and
               Deva Ramanan and Piotr Doll{\'a}r and C. Lawrence Zitnick},
  title     = {{Microsoft COCO}: Common Objects in Context},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2014}
}""",
    )

  def _split_generators(self, dl_manager):
    manual_dir = find_manual_archives(dl_manager, ARCHIVES, missing_archives_error)
    annotations = manual_dir / ANNOTATIONS_ZIP
    return {"train": self._generate_examples(manual_dir / TRAIN_ZIP, annotations, "train"),
            "validation": self._generate_examples(manual_dir / VAL_ZIP, annotations, "validation")}

  def _generate_examples(self, images_zip: pathlib.Path, annotations_zip: pathlib.Path,
                         split: str) -> Iterator[tuple[str, dict]]:
    images, labels = read_instances(annotations_zip, split)
    folder = SPLIT_DIRS[split]
    with _open_zip(images_zip) as zf:
      for info in images:
        file_name = info["file_name"]
        try:
          data = zf.read(f"{folder}/{file_name}")
        except KeyError:
          raise _bad_archive(images_zip, f"has no {folder}/{file_name} (listed in the annotations)") from None
        yield file_name, {"image": normalize_jpeg(data), "label": labels.get(int(info["id"]), []),
                          "image_id": int(info["id"]), "file_name": file_name}


assert len(CATEGORY_IDS) == NUM_CLASSES == 80
