"""Tests of hubtl.data against real `datasets` loading of image folders, csv/tsv/json/parquet files and shared data."""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hubtl.backbones.base import Preprocessor
from hubtl.data import DatasetConfig, TransferData, load_transfer_data, make_collate
from hubtl.errors import ConfigError, DataError
from hubtl.images import load_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
HYMENOPTERA = SHARED / "hymenoptera"
SST2 = SHARED / "sst2"
needs_shared = pytest.mark.skipif(not (HYMENOPTERA.is_dir() and SST2.is_dir()), reason="shared data not present")


class ArrayPreprocessor(Preprocessor):
    """Stand-in image preprocessor: decode with load_image, resize, convert with numpy."""

    def __init__(self, size: int = 8) -> None:
        self.size = size

    def __call__(self, examples):
        arrays = [np.asarray(load_image(x).resize((self.size, self.size)), dtype=np.float32) / 255.0 for x in examples]
        return {"pixel_values": torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()}


class LengthPreprocessor(Preprocessor):
    """Stand-in text preprocessor: string lengths as a tensor."""

    def __call__(self, examples):
        return {"lengths": torch.tensor([len(x) for x in examples])}


def _write_image(path: Path, color: tuple[int, int, int], fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), color).save(path, format=fmt)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """cat/ and dog/ with 10 good images each, a text file named .jpg, a truncated JPEG and a GIF named .jpg."""
    root = tmp_path_factory.mktemp("pets")
    for i in range(10):
        _write_image(root / "cat" / f"cat{i}.png", (200, 10 * i, 0))
        _write_image(root / "dog" / f"dog{i}.jpg", (0, 10 * i, 200), "JPEG")
    (root / "cat" / "notes.jpg").write_text("not an image at all")
    whole = (root / "dog" / "dog0.jpg").read_bytes()
    (root / "dog" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    Image.new("P", (10, 10), 3).save(root / "cat" / "animated.jpg", format="GIF")
    return root


def _load(path, task="classification", modality="text", **kwargs) -> TransferData:
    options = {k: kwargs.pop(k) for k in ("labels", "num_outputs", "seed", "strict") if k in kwargs}
    return load_transfer_data(DatasetConfig(str(path), **kwargs), task=task, modality=modality, **options)


def _items(data: TransferData) -> list[tuple]:
    """Every (raw input, target) pair of the train and eval datasets."""
    return [data.train[i] for i in range(len(data.train))] + [data.eval[i] for i in range(len(data.eval))]


def _write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    pd.DataFrame(rows).to_csv(path, sep=sep, index=False)
    return path


# --- image folders -------------------------------------------------------------------------------


def test_an_image_folder_class_without_images_is_flagged(image_folder, tmp_path, caplog):
    import shutil

    root = Path(shutil.copytree(image_folder, tmp_path / "pets"))
    (root / "wasp").mkdir()  # an empty class folder: datasets leaves it out silently
    with caplog.at_level(logging.WARNING, logger="hubtl"):
        data = _load(root, modality="image", validation_size=0.2)
    assert data.labels == ["cat", "dog"]
    assert "1 folder(s) of" in caplog.text and "hold no images and are left out, so they are no class: wasp" in caplog.text


def test_image_folder_labels_skips_bad_files_and_keeps_gif(image_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="hubtl"):
        data = _load(image_folder, modality="image", validation_size=0.2)
    assert data.labels == ["cat", "dog"] and data.modality == "image"
    assert sorted(Path(p).name for p in data.skipped) == ["notes.jpg", "truncated.jpg"]
    assert "Skipped 2" in caplog.text and "notes.jpg" in caplog.text
    assert len(data.train) + len(data.eval) == 21  # 20 good images + the GIF named .jpg
    names = {Path(raw["path"]).name: int(target) for raw, target in _items(data)}
    assert names["animated.jpg"] == 0 and names["cat3.png"] == 0 and names["dog7.jpg"] == 1
    raw, target = data.train[0]
    assert set(raw) == {"bytes", "path"} and raw["bytes"] is None  # undecoded
    assert target.dtype == torch.long and target.shape == ()


def test_image_folder_strict_raises_listing_bad_files(image_folder):
    with pytest.raises(DataError, match=r"2 file\(s\) are not readable images: .*(notes|truncated)\.jpg"):
        _load(image_folder, modality="image", strict=True)


@needs_shared
def test_hymenoptera_splits_and_gif():
    data = _load(HYMENOPTERA, modality="image")
    assert (len(data.train), len(data.eval)) == (245, 153)
    assert data.labels == ["ants", "bees"] and data.skipped == []
    assert Counter(data.train.targets.tolist()) == {0: 124, 1: 121}
    assert Counter(data.eval.targets.tolist()) == {0: 70, 1: 83}
    paths = {Path(data.train[i][0]["path"]).name for i in range(len(data.train))}
    assert "imageNotFound.gif" in paths


def test_image_paths_in_csv_resolve_relative_to_the_file(image_folder, tmp_path):
    relative = Path(os.path.relpath(image_folder, tmp_path))
    rows = [{"file": str(relative / "cat" / f"cat{i}.png"), "label": "cat"} for i in range(3)]
    rows += [{"file": str(image_folder / "dog" / f"dog{i}.jpg"), "label": "dog"} for i in range(3)]
    csv_path = _write_csv(tmp_path / "images.csv", rows)
    data = _load(csv_path, modality="image", image_column="file", validation_size=0.34)
    assert all(Path(raw).is_absolute() and Path(raw).is_file() for raw, _ in _items(data)) and data.skipped == []


@pytest.mark.parametrize("odd", ["cover.png", "cat/closeups/c.png"], ids=["beside-the-classes", "nested"])
def test_an_image_folder_whose_classes_cannot_be_inferred_names_the_odd_files(image_folder, tmp_path, odd):
    import shutil

    root = tmp_path / "pets"
    shutil.copytree(image_folder, root)
    _write_image(root / odd, (5, 5, 5))
    with pytest.raises(DataError) as err:
        _load(root, modality="image")
    message = str(err.value)
    assert "has images but no class labels" in message and odd in message and "Move them into a class folder" in message
    assert "label_column" not in message


def test_an_image_folder_of_one_class_says_how_to_lay_it_out(tmp_path):
    for i in range(4):
        _write_image(tmp_path / "only" / f"{i}.png", (i, i, i))
    with pytest.raises(DataError, match="no class labels. For an image folder, put the images in one sub-folder per class"):
        _load(tmp_path, modality="image")


def _a_run_output(folder: Path) -> None:
    """What a run leaves in its output folder: a saved model, training/ with plots and metrics, checkpoints/."""
    from hubtl import TransferModel

    TransferModel.from_backbone("timm:test_resnet", labels=["a", "b"], pretrained=False).save_pretrained(folder)
    _write_image(folder / "training" / "training_curves.png", (1, 2, 3))
    (folder / "training" / "metrics.jsonl").write_text('{"epoch": 1, "eval_loss": 0.5}\n')
    (folder / "checkpoints" / "checkpoint-5").mkdir(parents=True)


def test_an_output_folder_inside_a_csv_project_is_not_read_as_data(tmp_path):
    """output_dir inside dataset.path: its plots made the project an image folder, its training/ folder the train split."""
    rows = [{"review": f"text {i}", "sentiment": "good" if i % 2 else "bad"} for i in range(12)]
    _write_csv(tmp_path / "train.csv", rows)
    _write_csv(tmp_path / "validation.csv", rows[:4])
    _a_run_output(tmp_path / "out1")
    data = _load(tmp_path, text_column="review", label_column="sentiment")
    assert (len(data.train), len(data.eval), data.labels) == (12, 4, ["bad", "good"])


def test_an_output_folder_inside_an_image_folder_is_refused_by_name(image_folder, tmp_path):
    import shutil

    root = tmp_path / "pets"
    shutil.copytree(image_folder, root)
    _a_run_output(root / "runs" / "first")
    with pytest.raises(DataError, match=r"holds hubtl output folder\(s\) \(runs/first\).*output_dir outside dataset.path"):
        _load(root, modality="image")


# --- text files ----------------------------------------------------------------------------------


@needs_shared
def test_sst2_directory_headerless_tsv():
    data = _load(SST2, column_names=["sentence", "label"])
    # the files have no trailing newline: 6,920 / 872 rows, one more than `wc -l` counts
    assert (len(data.train), len(data.eval)) == (6920, 872)
    assert data.labels == ["0", "1"]
    text, target = data.train[0]
    assert text.startswith("a stirring , funny") and int(target) == 1


@needs_shared
def test_sst2_single_file_carves_eval_split():
    data = _load(SST2 / "dev.tsv", column_names=["sentence", "label"], validation_size=0.25)
    assert len(data.train) + len(data.eval) == 872 and len(data.eval) == 218
    assert all(isinstance(data.eval[i][0], str) for i in range(len(data.eval)))


def test_tsv_with_quotes_and_null_like_text(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text('he said "great" and left\t1\n"quoted start\t0\nNA\t1\nnull\t0\n')
    data = _load(path, column_names=["sentence", "label"], validation_size=0.5, seed=0)
    texts = sorted(text for text, _ in _items(data))
    assert texts == sorted(['he said "great" and left', '"quoted start', "NA", "null"])


def test_csv_with_header_string_labels_and_data_files_dict(tmp_path):
    _write_csv(tmp_path / "a.csv", [{"text": f"t{i}", "label": ["pos", "neg"][i % 2]} for i in range(6)])
    _write_csv(tmp_path / "b.csv", [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}])
    data = _load(tmp_path, data_files={"train": "a.csv", "validation": "b.csv"})
    assert data.labels == ["neg", "pos"] and (len(data.train), len(data.eval)) == (6, 2)
    assert [int(data.eval[i][1]) for i in range(2)] == [1, 0]


def test_integer_labels_sorted_numerically(tmp_path):
    path = _write_csv(tmp_path / "n.csv", [{"text": f"n{v}", "label": v} for v in [10, 2, 1, 2, 10, 1] * 2])
    data = _load(path, validation_size=0.5)
    assert data.labels == ["1", "2", "10"]
    assert all(data.labels[int(t)] == text[1:] for text, t in _items(data))


def test_labels_mixing_numbers_and_words_are_flagged(tmp_path, caplog):
    rows = [{"text": f"t{i}", "label": ["0", "1", "neg", "pos"][i % 4]} for i in range(8)]  # two conventions merged
    with caplog.at_level("WARNING", logger="hubtl"):
        data = _load(_write_csv(tmp_path / "m.csv", rows), validation_size=0.5)
    assert data.labels == ["0", "1", "neg", "pos"]
    assert "mixes numbers (0, 1) and words (neg, pos): they are 4 different classes" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="hubtl"):
        _load(_write_csv(tmp_path / "w.csv", [{**r, "label": r["label"] + "x"} for r in rows]), validation_size=0.5)
    assert "mixes numbers" not in caplog.text


def test_one_class_is_refused_and_labels_of_another_task_get_a_hint(tmp_path, caplog):
    one = [{"text": f"t{i}", "label": "pos"} for i in range(8)]
    with pytest.raises(DataError, match=r"at least two classes; label column 'label' holds only pos\. Check label_column"):
        _load(_write_csv(tmp_path / "one.csv", one), validation_size=0.5)
    assert _load(_write_csv(tmp_path / "given.csv", one), validation_size=0.5, labels=["neg", "pos"]).labels == ["neg", "pos"]
    scores = [{"text": f"t{i}", "label": round(0.1 * i + 0.05, 2)} for i in range(8)]
    combos = [{"text": f"t{i}", "label": ["funny,sad", "sad", "funny,tense", "tense,sad"][i % 4]} for i in range(8)]
    whole = [{"text": f"t{i}", "label": i % 3} for i in range(9)]
    with caplog.at_level("WARNING", logger="hubtl"):
        _load(_write_csv(tmp_path / "scores.csv", scores), validation_size=0.5)
        _load(_write_csv(tmp_path / "combos.csv", combos), validation_size=0.5)
        _load(_write_csv(tmp_path / "whole.csv", whole), validation_size=0.4)
    assert caplog.text.count("set task: regression") == 1 and caplog.text.count("set task: multi_label") == 1


def test_class_label_feature_order_kept_and_unlabelled_rows_rejected(tmp_path):
    features = datasets.Features({
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["zebra", "ant"]),
        "tags": datasets.Sequence(datasets.ClassLabel(names=["q", "p"])),
    })
    rows = {"text": ["a", "b", "c", "d"], "label": [0, 1, 1, 0], "tags": [[1], [0, 1], [], [0]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "cl.parquet")
    data = _load(tmp_path / "cl.parquet", validation_size=0.5)
    assert data.labels == ["zebra", "ant"]
    assert {text: int(t) for text, t in _items(data)} == {"a": 0, "b": 1, "c": 1, "d": 0}
    multi = _load(tmp_path / "cl.parquet", task="multi_label", label_column="tags", validation_size=0.25, seed=0)
    assert multi.labels == ["q", "p"]
    got = {text: t.tolist() for text, t in _items(multi)}
    assert got == {"a": [0.0, 1.0], "b": [1.0, 1.0], "c": [0.0, 0.0], "d": [1.0, 0.0]}

    rows["label"] = [0, -1, 1, -1]
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "holes.parquet")
    with pytest.raises(DataError, match=r"2 row\(s\) of split 'train' have no label in column 'label' \(rows 1, 3\)"):
        _load(tmp_path / "holes.parquet")


def test_given_labels_map_names_and_ids(tmp_path):
    names = _write_csv(tmp_path / "names.csv", [{"text": "a", "label": "bad"}, {"text": "b", "label": "good"}] * 3)
    data = _load(names, labels=["good", "bad"], validation_size=0.5)
    assert data.labels == ["good", "bad"]
    assert all((text == "a") == (int(t) == 1) for text, t in _items(data))
    ids = _write_csv(tmp_path / "ids.csv", [{"text": "a", "label": 0}, {"text": "b", "label": 1}] * 3)
    data = _load(ids, labels=["neg", "pos"], validation_size=0.5)
    assert all((text == "b") == (int(t) == 1) for text, t in _items(data))


def test_label_outside_given_set(tmp_path):
    path = _write_csv(tmp_path / "x.csv", [{"text": "a", "label": v} for v in ["cat", "dog", "emu", "yak"]])
    with pytest.raises(DataError, match=r"2 value\(s\) outside the label set cat, dog: emu, yak\. Add them to labels"):
        _load(path, labels=["cat", "dog"])


def test_multi_label_from_jsonl_lists_and_separated_strings(tmp_path):
    rows = [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["z"]}, {"text": "c", "label": []}] * 2
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    data = _load(jsonl, task="multi_label", validation_size=0.5)
    assert data.labels == ["x", "y", "z"]
    targets = {text: t.tolist() for text, t in _items(data)}
    assert targets == {"a": [1.0, 1.0, 0.0], "b": [0.0, 0.0, 1.0], "c": [0.0, 0.0, 0.0]}

    strings = _write_csv(tmp_path / "s.csv", [{"text": "a", "tags": "x; y"}, {"text": "b", "tags": "y"}] * 2)
    data = _load(strings, task="multi_label", label_column="tags", label_separator=";", labels=["y", "x"],
                 validation_size=0.5, seed=1)
    got = {text: t.tolist() for text, t in _items(data)}
    assert got == {"a": [1.0, 1.0], "b": [1.0, 0.0]} and data.train[0][1].dtype == torch.float32


def test_regression_scalar_csv_and_vector_parquet(tmp_path):
    path = _write_csv(tmp_path / "r.csv", [{"text": f"t{i}", "score": i / 2} for i in range(10)])
    data = _load(path, task="regression", label_column="score")
    assert data.labels is None
    text, target = data.train[0]
    assert target.dtype == torch.float32 and target.shape == (1,) and float(target) == int(text[1:]) / 2

    parquet = tmp_path / "v.parquet"
    vectors = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": vectors}).to_parquet(parquet)
    data = _load(parquet, task="regression", num_outputs=2, validation_size=0.25)
    assert data.train[0][1].shape == (2,) and len(data.eval) == 1
    with pytest.raises(DataError, match=r"must hold a list of 3 numbers, but row 0 of split 'train'"):
        _load(parquet, task="regression", num_outputs=3)


# --- carving out an eval split --------------------------------------------------------------------


def test_carved_split_is_stratified_and_seeded(tmp_path):
    rows = [{"text": f"t{i}", "label": "rare" if i % 5 == 0 else "common"} for i in range(100)]
    path = _write_csv(tmp_path / "imb.csv", rows)

    def split(seed):
        data = _load(path, validation_size=0.2, seed=seed)
        return data, sorted(data.eval[i][0] for i in range(len(data.eval)))

    first, eval_a = split(7)
    _, eval_b = split(7)
    _, eval_c = split(8)
    assert eval_a == eval_b and eval_a != eval_c
    assert len(first.eval) == 20 and len(first.train) == 80
    assert Counter(first.eval.targets.tolist()) == {first.labels.index("common"): 16, first.labels.index("rare"): 4}
    assert not set(eval_a) & {first.train[i][0] for i in range(len(first.train))}


def test_carve_falls_back_to_plain_split_when_a_class_is_too_small(tmp_path, caplog):
    rows = [{"text": f"t{i}", "label": "lonely" if i == 0 else "crowd"} for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="hubtl"):
        data = _load(_write_csv(tmp_path / "one.csv", rows), validation_size=0.2)
    assert (len(data.train), len(data.eval)) == (8, 2) and "without stratification" in caplog.text


def test_max_samples_cap_is_seeded(tmp_path):
    path = _write_csv(tmp_path / "c.csv", [{"text": f"t{i}", "label": i % 3} for i in range(60)])
    a = _load(path, max_train_samples=7, max_eval_samples=3, seed=3)
    b = _load(path, max_train_samples=7, max_eval_samples=3, seed=3)
    assert (len(a.train), len(a.eval)) == (7, 3)
    assert [a.train[i][0] for i in range(7)] == [b.train[i][0] for i in range(7)]


# --- bad input --------------------------------------------------------------------------------------


@pytest.fixture
def text_csv(tmp_path) -> Path:
    return _write_csv(tmp_path / "t.csv", [{"text": f"t{i}", "y": i % 2} for i in range(6)])


def test_missing_label_column_lists_columns(text_csv):
    with pytest.raises(DataError, match=r"label column 'label' is not in split 'train'.*columns are: text, y\. Set"):
        _load(text_csv)


def test_missing_text_and_image_columns(text_csv):
    with pytest.raises(DataError, match=r"text column 'body' is not in split 'train'.*columns are: text, y"):
        _load(text_csv, text_column="body", label_column="y")
    with pytest.raises(DataError, match=r"image column 'image' is not in split 'train'.*Set image_column"):
        _load(text_csv, modality="image", label_column="y")


def test_non_string_text_names_the_row(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": 0}) for t in ["fine", "also fine", None, "ok"]))
    with pytest.raises(DataError, match=r"must hold strings, but row 2 of split 'train' holds None"):
        _load(path)
    numbers = _write_csv(tmp_path / "num.csv", [{"text": i, "label": 0} for i in range(4)])
    with pytest.raises(DataError, match=r"row 0 of split 'train' holds 0 \(int\)"):
        _load(numbers)


def test_empty_split(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match=r"Split 'train' of .*empty\.csv is empty"):
        _load(path)


def test_path_not_found_and_unsupported_extension(tmp_path):
    with pytest.raises(DataError, match=r"Dataset path not found: .*nowhere"):
        _load(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"Dataset path not found: missing\.csv"):
        _load("missing.csv")
    sheet = tmp_path / "table.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=r"Unsupported file extension '\.xlsx'.*use \.csv, \.tsv"):
        _load(sheet)
    with pytest.raises(DataError, match=r"Data file not found: nope\.csv"):
        _load(tmp_path, data_files="nope.csv")


def test_eval_split_absent_lists_splits(tmp_path, text_csv):
    with pytest.raises(DataError, match=r"Eval split 'test' not found in .*; it has: train, validation\."):
        _load(text_csv.parent, data_files={"train": "t.csv", "validation": "t.csv"}, eval_split="test",
              label_column="y")


def test_missing_class_labels_and_bad_regression_values(tmp_path):
    path = tmp_path / "holes.csv"
    path.write_text("text,label\na,pos\nb,\nc,neg\n")
    with pytest.raises(DataError, match=r"1 row\(s\) of split 'train' have no label in column 'label' \(rows 1\)"):
        _load(path)
    with pytest.raises(DataError, match=r"must hold a number, but row 0 of split 'train' holds 'pos'"):
        _load(path, task="regression")


@pytest.mark.parametrize(
    ("bad", "sep", "pattern"),
    [
        ("nan", ",", r"finite numbers, but row 20 of split 'train' holds 'nan': NaN and ±inf targets are refused"),
        ("big", ",", r"must hold a number, but row 20 of split 'train' holds 'big'\. Fix that row"),
        ("nan", "\t", r"must hold finite numbers, but row 20 of split 'train' holds 'nan'"),
        ("big", "\t", r"must hold a number, but row 20 of split 'train' holds 'big'"),
        ("-inf", ",", r"must hold finite numbers, but row 20 of split 'train' holds -inf: NaN and ±inf"),
    ],
)
def test_regression_blames_the_first_row_that_is_not_a_finite_number(tmp_path, bad, sep, pattern):
    # one bad cell turns the whole column into text: the good rows before it ("0.5") must not be blamed
    values = [f"{0.5 + i / 10:.1f}" for i in range(25)]
    values[20] = bad
    path = tmp_path / ("scores.tsv" if sep == "\t" else "scores.csv")
    path.write_text(f"text{sep}score\n" + "".join(f"review {i}{sep}{v}\n" for i, v in enumerate(values)))
    with pytest.raises(DataError, match=pattern):
        _load(path, task="regression", label_column="score")


def test_regression_targets_written_as_text_are_numbers(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "score": f" {i / 4} "}) + "\n" for i in range(8)))
    data = _load(path, task="regression", label_column="score", validation_size=0.25)
    assert sorted(float(t) for _, t in _items(data)) == [i / 4 for i in range(8)]


def test_bad_arguments_are_config_errors(text_csv):
    with pytest.raises(ConfigError, match="Unknown task 'segmentation'"):
        _load(text_csv, task="segmentation")
    with pytest.raises(ConfigError, match="validation_size must be a fraction"):
        _load(text_csv, validation_size=1.5)
    with pytest.raises(ConfigError, match="validation_size must be a fraction"):
        _load(text_csv, validation_size="0.2")
    jsonl = text_csv.parent / "x.jsonl"
    jsonl.write_text('{"text": "a", "label": 0}')
    with pytest.raises(ConfigError, match="column_names only applies to header-less csv/tsv"):
        _load(jsonl, column_names=["text", "label"])
    header_only, empty = text_csv.parent / "header.csv", text_csv.parent / "empty.csv"
    header_only.write_text("text,label\n")
    empty.write_text("")
    for train in (header_only, empty):  # was "DatasetGenerationError: An error occurred while generating the dataset"
        with pytest.raises(DataError, match=r"holds no rows \(it is empty, or a header only\); add examples to it"):
            _load(text_csv.parent, data_files={"train": str(train), "validation": str(text_csv)})
    with pytest.raises(DataError, match=r"its columns are: sentence\. .*more columns than column_names names"):
        _load(SST2 / "dev.tsv", column_names=["sentence"], validation_size=0.25)  # pandas' __index_level_0__ not shown
    with pytest.raises(ConfigError, match="labels has duplicates"):
        _load(text_csv, labels=["a", "a"])


# --- collate and DataLoader --------------------------------------------------------------------------


def test_make_collate_with_dataloader_workers(image_folder):
    data = _load(image_folder, modality="image", validation_size=0.2)
    restored = pickle.loads(pickle.dumps(data.train))
    assert restored[3][0] == data.train[3][0] and torch.equal(restored.targets, data.train.targets)

    loader = DataLoader(data.train, batch_size=4, shuffle=True, num_workers=2,
                        collate_fn=make_collate(ArrayPreprocessor(), "classification"))
    seen = 0
    for batch, targets in loader:
        assert batch["pixel_values"].shape[1:] == (3, 8, 8) and targets.dtype == torch.long
        assert targets.shape == (batch["pixel_values"].shape[0],)
        seen += len(targets)
    assert seen == len(data.train)


def test_make_collate_with_spawned_workers(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps({"text": "a" * (i + 1), "label": f"x,{'y' if i % 2 else 'z'}"})
                              for i in range(8)))
    data = _load(path, task="multi_label", validation_size=0.25)
    # one spawned worker is enough to prove the dataset and collate_fn survive a fresh interpreter
    loader = DataLoader(data.train, batch_size=3, num_workers=1, multiprocessing_context="spawn",
                        collate_fn=make_collate(LengthPreprocessor(), "multi_label"))
    batches = list(loader)
    assert sum(len(t) for _, t in batches) == 6
    assert all(t.dtype == torch.float32 and t.shape[1] == 3 for _, t in batches)
    assert all(b["lengths"].tolist() == [len(data.train[i][0]) for i in range(k * 3, k * 3 + len(b["lengths"]))]
               for k, (b, _) in enumerate(batches))


def test_make_collate_rejects_unknown_task():
    with pytest.raises(ConfigError, match="Unknown task 'ranking'"):
        make_collate(LengthPreprocessor(), "ranking")


# --- split names as they are on disk, data_files without path ------------------------------------


@pytest.mark.parametrize("folder", ["val", "valid", "dev"])
def test_image_folder_split_named_as_on_disk(tmp_path: Path, folder: str) -> None:
    for split in ("train", folder):
        for name, colour in (("ant", (200, 0, 0)), ("bee", (0, 0, 200))):
            for i in range(3):
                _write_image(tmp_path / split / name / f"{name}{i}.png", colour)
    data = _load(tmp_path, modality="image", eval_split=folder)
    assert len(data.train) == 6 and len(data.eval) == 6 and data.labels == ["ant", "bee"]


def test_data_files_without_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "train.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(8)])
    _write_csv(tmp_path / "dev.csv", [{"text": f"d{i}", "label": "ab"[i % 2]} for i in range(4)])
    cfg = DatasetConfig(data_files={"train": "train.csv", "validation": "dev.csv"})
    data = load_transfer_data(cfg, task="classification", modality="text")
    assert len(data.train) == 8 and len(data.eval) == 4 and data.labels == ["a", "b"]
    with pytest.raises(ConfigError, match=r"dataset\.path is empty and no dataset\.data_files"):
        load_transfer_data(DatasetConfig(), task="classification", modality="text")


def test_large_jpegs_are_decoded_at_reduced_scale_for_evaluation_and_the_onnx_consumer_does_the_same(tmp_path):
    from hubtl.backbones.timm import ImagePreprocessor
    from hubtl.export.onnx_consumer import preprocess_image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024]
    photo = np.stack([x / 4, y / 3, (x + y) / 7], axis=-1) % 256 + rng.normal(0, 4, (768, 1024, 3))
    Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(tmp_path / "photo.jpg", quality=92)
    Image.fromarray(photo[:767, :1023].clip(0, 255).astype(np.uint8)).save(tmp_path / "odd.jpg", quality=92)
    preprocess = ImagePreprocessor({"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0})
    assert preprocess.decode_size() == 96  # 3 x the 32-pixel resize target
    assert load_image(tmp_path / "photo.jpg", min_size=96).size == (128, 96)  # 1/8: both sides still >= 96
    assert load_image(tmp_path / "photo.jpg", min_size=97).size == (256, 192)  # 1/4
    assert load_image(tmp_path / "odd.jpg", min_size=96).size == (1023, 767)  # no exact divisor: decoded in full
    drafted = preprocess([tmp_path / "photo.jpg"])["pixel_values"]
    full = preprocess([Image.open(tmp_path / "photo.jpg")])["pixel_values"]  # a PIL image is never re-decoded
    assert drafted.shape == full.shape and 0 < (drafted - full).abs().mean() < 0.02
    assert (drafted - full).abs().max() < 0.15
    consumer = preprocess_image(tmp_path / "photo.jpg", preprocess.config())
    np.testing.assert_allclose(consumer, drafted[0].numpy(), atol=1e-6)


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    from hubtl.backbones.timm import ImagePreprocessor
    from hubtl.export.onnx_consumer import preprocess_image

    ramp = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)  # e.g. a 16-bit PNG from a scanner
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "8bit.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    deep, eight = np.asarray(load_image(tmp_path / "deep.png")), np.asarray(load_image(tmp_path / "8bit.png"))
    assert np.abs(deep.astype(int) - eight).max() <= 1 and 120 < deep.mean() < 135  # was 254.6 of 255 (clipped)
    preprocess = ImagePreprocessor({"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    np.testing.assert_allclose(preprocess_image(tmp_path / "deep.png", preprocess.config()),
                               preprocess([tmp_path / "deep.png"])["pixel_values"][0].numpy(), atol=1e-6)


def test_length_grouped_sampler_batches_similar_lengths_and_is_seeded_per_epoch():
    from hubtl.data.lengths import LengthGroupedSampler

    lengths = np.random.default_rng(0).integers(1, 200, 400).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(400)) and first == list(sampler)  # every example once; the epoch's order kept
    assert first == list(LengthGroupedSampler(lengths, batch_size=8, seed=3))  # drawn from the seed alone
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(400))

    def padded(order: list[int]) -> int:  # tokens a pad-to-the-longest batch of 8 holds
        return sum(8 * max(lengths[i] for i in order[s:s + 8]) for s in range(0, len(order), 8))

    assert padded(first) < 0.75 * padded(np.random.default_rng(1).permutation(400).tolist())
    assert lengths[first[0]] == max(lengths)  # the longest batch first (an out-of-memory error comes early)
