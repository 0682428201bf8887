"""Data sets and augmentation for training (see :mod:`cnnspec.data.datasets` for the data specs).

    data = load_dataset("shapes", (1, 28, 28), seed=0, val_split=0.1)
    augment = Augmenter(parse_augment(["flip", "rotate(15)"]), data.sample_shape)
    batch = augment(data.x_train[:64], np.random.default_rng(0))
"""
from cnnspec.data.augment import AUGMENTATIONS, Augmenter, parse_augment
from cnnspec.data.datasets import Dataset, check_labels, fit_to_input, load_dataset
from cnnspec.data.files import read_array, read_image
from cnnspec.data.shapes import SHAPE_CLASSES, make_shapes

__all__ = ["AUGMENTATIONS", "Augmenter", "Dataset", "SHAPE_CLASSES", "check_labels", "fit_to_input",
           "load_dataset", "make_shapes", "parse_augment", "read_array", "read_image"]
