"""Data, grouped by kind: named data sets (:mod:`.named`, files found by :mod:`.datasets`),
image folders (:mod:`.folders`) and tables (:mod:`.tables`); :mod:`.readers` parses file
formats; the in-memory batch pipeline (:mod:`.loaders`) and batched augmentation
(:mod:`.augment`) serve them all.

The entry point is :func:`build_data`, which takes the data section of a run config::

    from resnetlab.data import build_data
    from resnetlab.engine.config import DataConfig
    bundle = build_data(DataConfig(name="fashion-mnist", batch_size=128), seed=0)
    for x, y in bundle.train.epoch(0):
        ...

Small data sets live on the training device as one uint8 tensor; batches are sliced from a
seeded permutation and augmented as whole-batch tensor ops (DESIGN.md, style point 6).
"""

from resnetlab.data.augment import (
    AugmentSpec,
    ImageTransform,
    Normalize,
    channel_stats,
    flip_tta,
    hflip,
    parse_augment,
)
from resnetlab.data.build import DataBundle, build_data, data_kind
from resnetlab.data.datasets import DATASETS, dataset_info, download, list_datasets, locate
from resnetlab.data.inputs import (
    decode_images,
    input_columns,
    preprocess_inputs,
    records_table,
    table_features,
)
from resnetlab.data.loaders import BatchLoader, StreamSource, TensorSource

__all__ = [
    "build_data", "data_kind", "preprocess_inputs", "decode_images", "table_features",
    "input_columns", "records_table", "flip_tta", "DataBundle", "BatchLoader",
    "TensorSource", "StreamSource", "AugmentSpec", "ImageTransform", "Normalize",
    "parse_augment", "hflip", "channel_stats", "DATASETS", "dataset_info", "list_datasets",
    "locate", "download",
]
