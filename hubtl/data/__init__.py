"""Data for fine-tuning: a config, its sources (Hub datasets, image folders, csv/tsv/json/parquet files) and the
checked (raw input, target) pairs the trainer reads.

- `config`: `DatasetConfig`, the `dataset:` section of a training config.
- `sources`: where the data comes from, read into splits (a new kind of source goes here).
- `dataset`: splits, columns and labels turned into `TransferData`; `make_collate` for DataLoaders.
- `lengths`: input lengths (texts) for batching similar lengths together: the feature pass, `group_by_length`.
- `streaming`: the train split as a stream with exact resume (`dataset.streaming`); imported where used.
"""

from .config import DatasetConfig
from .dataset import TransferData, TransferDataset, load_transfer_data, make_collate
from .sources import EVAL_SPLIT_NAMES, SPLIT_ALIASES, check_source

__all__ = [
    "EVAL_SPLIT_NAMES",
    "SPLIT_ALIASES",
    "DatasetConfig",
    "TransferData",
    "TransferDataset",
    "check_source",
    "load_transfer_data",
    "make_collate",
]
