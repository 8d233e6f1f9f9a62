"""`DatasetConfig`: where a fine-tuning dataset comes from and which columns hold inputs and labels."""

from __future__ import annotations

from dataclasses import dataclass, field

def _help(text: str) -> dict[str, str]:
    """Field metadata: the one-line meaning shown by `hubtl train --help` and the README's config reference."""
    return {"help": text}


@dataclass
class DatasetConfig:
    """Where a fine-tuning dataset comes from and which columns hold inputs and labels."""

    path: str | None = field(
        default=None,
        metadata=_help("Hub dataset ID, image folder (one sub-folder per class), or a csv/tsv/json/jsonl/parquet file or folder"),
    )
    name: str | None = field(default=None, metadata=_help("Hub dataset config name"))
    train_split: str = field(default="train", metadata=_help("split to train on"))
    eval_split: str | None = field(
        default=None,
        metadata=_help("split to evaluate on (default: validation/val/valid/dev/test, else a seeded, stratified carve-out)"),
    )
    image_column: str | None = field(default=None, metadata=_help("column of images or image paths (default: image)"))
    text_column: str | None = field(default=None, metadata=_help("column of texts (default: text)"))
    label_column: str = field(default="label", metadata=_help("column of labels (a class, a list of classes, or numbers)"))
    data_files: str | list[str] | dict[str, str | list[str]] | None = field(
        default=None, metadata=_help("files as datasets.load_dataset takes them, e.g. {train: a.csv, validation: b.csv}")
    )
    unlabeled_split: str | None = field(
        default=None, metadata=_help("distill: a split without labels, trained on the teacher's outputs only")
    )
    unlabeled_files: str | list[str] | None = field(
        default=None, metadata=_help("distill: files without labels (the training columns minus the label), as data_files")
    )
    column_names: list[str] | None = field(default=None, metadata=_help("column names of header-less csv/tsv files"))
    validation_size: float = field(default=0.1, metadata=_help("fraction of the train split carved out when there is no eval split"))
    label_separator: str = field(default=",", metadata=_help("separator of labels in one cell (multi_label)"))
    max_train_samples: int | None = field(default=None, metadata=_help("use at most this many training examples (seeded)"))
    max_eval_samples: int | None = field(default=None, metadata=_help("use at most this many evaluation examples (seeded)"))
    max_unlabeled_samples: int | None = field(
        default=None, metadata=_help("distill: use at most this many unlabeled examples (seeded)")
    )
    streaming: bool = field(
        default=False,
        metadata=_help("stream the train split (data larger than disk): needs max_steps and a finite eval split; "
                       "max_train_samples takes the first examples"),
    )
    shuffle_buffer_size: int = field(
        default=1000, metadata=_help("streaming: examples in the seeded shuffle buffer (1: the stream's own order)")
    )

    @property
    def source(self) -> str:
        """What the data is read from: the path, else the data files (for messages)."""
        if self.path:
            return self.path
        files = self.data_files
        return str(files if isinstance(files, str) else files)
