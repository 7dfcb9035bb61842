"""The 1000 ImageNet (ILSVRC-2012) classes: WordNet ids and names, from tensorflow-datasets.

tensorflow-datasets ships the label list of its `imagenet2012` builder
(`datasets/imagenet2012/labels.txt`: the 1000 WordNet ids in class-index order, the order
BigGAN's class indices follow) and the matching human-readable labels
(`IMAGENET_LABELS_LIST` in `datasets/siscore/labels.py`, e.g. "tench, Tinca tinca"). Both
are read as files, without importing tensorflow-datasets (which takes seconds) and without
network access.

Class names: a label lists synonyms separated by ", "; a class's name is its first
synonym ("tench", "goldfish", "golden retriever"), so no name holds a comma and names can
be given as a comma-separated list (`sample --classes="golden retriever,goldfish"`). Where
two classes share their first synonym ("maillot": 638 and 639) each name is followed by
its WordNet id, "maillot (n03710637)". Every name is unique.
"""

from __future__ import annotations

import ast
import collections
import importlib.util
import os

NUM_CLASSES = 1000
_WNIDS = ("datasets", "imagenet2012", "labels.txt")
_LABELS = ("datasets", "siscore", "labels.py")
_LABELS_VARIABLE = "IMAGENET_LABELS_LIST"


def _tfds_file(parts) -> str:
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflow-datasets is not installed; the ImageNet labels come from it")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: this tensorflow-datasets version does not ship the ImageNet "
            "label list where tf_biggan expects it"
        )
    return path


def _labels_list(path: str) -> list[str]:
    """The list literal assigned to `IMAGENET_LABELS_LIST` in `path`, read without importing."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == _LABELS_VARIABLE for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{path} has no {_LABELS_VARIABLE}")


def imagenet_classes() -> list[dict]:
    """The 1000 classes in index order: `{"index", "name", "wnid", "label"}` each.

    Raises:
      ImportError, FileNotFoundError, ValueError: the label files are missing or malformed.
    """
    with open(_tfds_file(_WNIDS), encoding="utf-8") as f:
        wnids = [line.strip() for line in f if line.strip()]
    labels = _labels_list(_tfds_file(_LABELS))
    if len(wnids) != NUM_CLASSES or len(labels) != NUM_CLASSES:
        raise ValueError(
            f"expected {NUM_CLASSES} WordNet ids and labels, got {len(wnids)} and {len(labels)}"
        )
    first = [label.split(", ")[0] for label in labels]
    shared = {name for name, count in collections.Counter(first).items() if count > 1}
    return [
        {
            "index": index,
            "name": f"{name} ({wnid})" if name in shared else name,
            "wnid": wnid,
            "label": label,
        }
        for index, (name, wnid, label) in enumerate(zip(first, wnids, labels, strict=True))
    ]


def classes_for(num_classes: int) -> list[dict]:
    """ImageNet's classes for a 1000-class model; otherwise `[]` (names unknown)."""
    return imagenet_classes() if num_classes == NUM_CLASSES else []
