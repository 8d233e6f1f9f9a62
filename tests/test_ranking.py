"""`hubtl rank`: the scores against direct implementations and known answers, and ranking candidates end to end."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy.stats import kendalltau

from hubtl.cli import main as cli_main
from hubtl.errors import ConfigError, HubtlError
from hubtl.ranking import RankResult, RankRow, kendall_tau, knn_accuracy, linear_probe_score, logme, rank
from hubtl.ranking.run import sample_rows
from hubtl.ranking.scores import target_columns
from hubtl.tasks import get_task

from conftest import TINY_TIMM

# ---------------------------------------------------------------------------------------------- LogME


def _logme_direct(f: np.ndarray, y: np.ndarray) -> float:
    """The paper's formulas, column by column, with explicit D x D matrices (slow, float64).

    A = αI + βFᵀF, m = β A⁻¹ Fᵀy, γ = Σ βσ/(α + βσ) over the eigenvalues σ of FᵀF;
    α ← γ / (mᵀm + ε), β ← (N − γ) / (|Fm − y|² + ε) until α/β changes by at most 0.1 %;
    evidence = D/2 log α + N/2 log β − N/2 log 2π − β/2 |Fm − y|² − α/2 mᵀm − ½ log det A.
    """
    f = f.astype(np.float64)
    n, d = f.shape
    ftf = f.T @ f
    eig = np.clip(np.linalg.eigvalsh(ftf), 0.0, None)
    evidences = []
    for c in range(y.shape[1]):
        t = y[:, c]
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            a = alpha * np.eye(d) + beta * ftf
            m = beta * np.linalg.solve(a, f.T @ t)
            gamma = float((beta * eig / (alpha + beta * eig)).sum())
            m2 = float(m @ m)
            res2 = float(((f @ m - t) ** 2).sum())
            old = alpha / beta
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - old) / old <= 1e-3:
                break
        _, logdet = np.linalg.slogdet(alpha * np.eye(d) + beta * ftf)
        evidence = (
            d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


@pytest.mark.parametrize("n, d, classes", [(200, 16, 3), (40, 64, 4), (120, 8, 2)])
def test_logme_equals_a_direct_implementation_of_the_paper(n: int, d: int, classes: int) -> None:
    rng = np.random.default_rng(n + d)
    labels = rng.integers(0, classes, n)
    f = rng.normal(size=(n, d)) + 1.5 * np.eye(classes, d)[labels]  # informative, not separable
    y = target_columns(labels, "classification", classes)
    assert logme(f.astype(np.float32), y) == pytest.approx(_logme_direct(f.astype(np.float32), y), abs=1e-6, rel=1e-6)


def test_logme_for_regression_targets_and_rank_deficient_features() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(80, 6))
    f = np.concatenate([base, base[:, :3] * 2.0], axis=1)  # rank 6 of 9 columns
    y = np.stack([base @ rng.normal(size=6) + 0.1 * rng.normal(size=80), rng.normal(size=80)], axis=1)
    assert logme(f, y) == pytest.approx(_logme_direct(f, y), abs=1e-6, rel=1e-6)


def test_logme_prefers_features_that_explain_the_labels() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    y = target_columns(labels, "classification", 2)
    good = rng.normal(size=(300, 8)) + 3.0 * labels[:, None]
    noise = rng.normal(size=(300, 8))
    assert logme(good, y) > logme(noise, y) + 0.1


def test_target_columns_leave_out_classes_and_labels_without_a_positive_example() -> None:
    labels = np.array([0, 2, 2, 0, 2])  # class 1 of 3 never occurs
    assert target_columns(labels, "classification", 3).tolist() == [[1, 0], [0, 1], [0, 1], [1, 0], [0, 1]]
    indicators = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0]], dtype=np.float32)  # label 1 never occurs
    assert target_columns(indicators, "multi_label", None).tolist() == [[1, 1], [0, 1], [1, 0]]
    values = np.array([[0.5, 0.0], [1.5, 0.0]])  # a regression output that is always 0 is still an output
    assert target_columns(values, "regression", None).shape == (2, 2)
    with pytest.raises(ConfigError, match="No label occurs"):
        target_columns(np.zeros((4, 3), dtype=np.float32), "multi_label", None)
    rng = np.random.default_rng(7)
    f = rng.normal(size=(60, 24))
    seen = rng.integers(0, 2, 60)
    assert logme(f, target_columns(seen, "classification", 3)) == logme(f, target_columns(seen, "classification", 2))


# ---------------------------------------------------------------------------------------------- k-NN and linear


def test_knn_leave_one_out_on_a_set_with_a_known_answer() -> None:
    # Two tight clusters far apart on the unit circle, and one point of class 1 inside cluster 0: every
    # example's 3 nearest neighbours (itself left out) are its own cluster, so all are right but the stray.
    angles = np.concatenate([np.linspace(0.0, 0.1, 10), np.linspace(2.0, 2.1, 10), [0.05]])
    f = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0] * 10 + [1] * 10 + [1])
    assert knn_accuracy(f, labels, k=3) == pytest.approx(20 / 21)
    # k = 1 on an alternating line: each point's nearest other point has the other label
    line = np.stack([np.ones(8), np.arange(8) * 0.01], axis=1)
    assert knn_accuracy(line, np.arange(8) % 2, k=1) == 0.0


def test_knn_regression_is_r2_of_the_neighbours_mean() -> None:
    angles = np.linspace(0.0, 1.5, 40)
    f = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert knn_accuracy(f, angles * 3.0, k=2, kind="regression") > 0.99
    assert knn_accuracy(f, np.random.default_rng(0).normal(size=40), k=2, kind="regression") < 0.2


def test_linear_probe_score_on_separable_and_on_random_labels() -> None:
    rng = np.random.default_rng(1)
    task = get_task("classification")
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    score = linear_probe_score(x[:150], y[:150], x[150:], y[150:], task, ["a", "b"])
    assert score >= 0.96
    random_labels = rng.integers(0, 2, 200)
    chance = linear_probe_score(x[:150], random_labels[:150], x[150:], random_labels[150:], task, ["a", "b"])
    assert chance < 0.75


def test_kendall_tau_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        a, b = rng.integers(0, 4, 9).tolist(), rng.normal(size=9).tolist()
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert math.isnan(kendall_tau([1, 2, 3], [0.5, 0.5, 0.5])) and math.isnan(kendalltau([1, 2, 3], [0.5] * 3).statistic)


def _tuned_result(scores: list[float], values: list[float], metric: str, greater_is_better: bool) -> RankResult:
    rows = [
        RankRow(f"c{i}", TINY_TIMM, False, {}, scores={"logme": s},
                fine_tuned={"metric": metric, "metric_value": v, "greater_is_better": greater_is_better})
        for i, (s, v) in enumerate(zip(scores, values))
    ]  # fmt: skip
    return RankResult("logme", rows, "regression", "data", 30, 10).sort()


def test_kendall_tau_counts_a_lower_is_better_metric_reversed_and_ties_as_undefined() -> None:
    # the best score has the lowest RMSE: the score and the fine-tuned models agree
    agree = _tuned_result([3.0, 2.0, 1.0], [0.1, 0.2, 0.3], "eval_rmse", greater_is_better=False)
    assert agree.kendall_tau() == 1.0 and agree.to_dict()["kendall_tau_with_fine_tuned"] == 1.0
    assert "fine-tuned eval_rmse (lower is better): 1.000" in agree.table()
    assert _tuned_result([3.0, 2.0, 1.0], [0.1, 0.2, 0.3], "eval_accuracy", True).kendall_tau() == -1.0
    tied = _tuned_result([3.0, 2.0, 1.0], [0.5, 0.5, 0.5], "eval_accuracy", greater_is_better=True)
    assert tied.kendall_tau() is None and tied.to_dict()["kendall_tau_with_fine_tuned"] is None
    assert "eval_accuracy: n/a (undefined" in tied.table() and "0.000" not in tied.table()


# ---------------------------------------------------------------------------------------------- ranking runs


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder whose classes differ in colour: 16 noisy 32x32 images each of blue and red."""
    root = tmp_path_factory.mktemp("colours")
    for c, (name, colour) in enumerate({"blue": (30, 40, 220), "red": (220, 40, 30)}.items()):
        for i in range(16):
            noise = np.random.default_rng(100 * c + i).integers(-40, 41, size=(32, 32, 3))
            (root / name).mkdir(exist_ok=True)
            Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _config(data: Path, out: Path, **values: Any) -> dict[str, Any]:
    return {
        "backbone": TINY_TIMM, "pretrained": False, "backbone_kwargs": {"image_size": 32},
        "dataset": {"path": str(data), "validation_size": 0.25}, "output_dir": str(out), "seed": 0,
        "disable_tqdm": True, "report_to": "none", "dataloader_num_workers": 0, "per_device_eval_batch_size": 8,
        **values,
    }  # fmt: skip


def test_rank_scores_candidates_reports_failures_and_writes_its_files(colours: Path, tmp_path: Path) -> None:
    candidates = [
        TINY_TIMM,
        {"name": "efficientnet", "backbone": "timm:test_efficientnet"},
        {"name": "wide-resnet", "backbone": TINY_TIMM, "backbone_kwargs": {"image_size": 32, "drop_rate": 0.0}},
        "timm:no_such_model_anywhere",
    ]
    result = rank(_config(colours, tmp_path), candidates, metric="all")
    names = [r.name for r in result.rows]
    assert names[-1] == "timm:no_such_model_anywhere"
    failed = result.rows[-1]
    assert not failed.ok and "no_such_model_anywhere" in failed.error and not failed.scores
    usable = [r for r in result.rows if r.ok]
    assert len(usable) == 3
    logmes = [r.scores["logme"] for r in usable]
    assert logmes == sorted(logmes, reverse=True)
    for row in usable:
        assert set(row.scores) == {"logme", "knn", "linear"}
        assert row.feature_dim and row.seconds > 0 and row.features_from == {"train": "computed", "eval": "computed"}
    # the same seed builds the same random weights: two rows of one architecture and kwargs score alike
    same = {r.name: r.scores["logme"] for r in usable}
    assert same[TINY_TIMM] == pytest.approx(same["wide-resnet"], abs=1e-9)
    saved = json.loads((tmp_path / "rank.json").read_text())
    assert [r["name"] for r in saved["rows"]] == names and saved["metric"] == "logme"
    assert (tmp_path / "rank.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FAILED" in result.table() and result.best.name == names[0]
    frame = result.to_pandas()
    assert list(frame["name"]) == names


def test_a_second_ranking_reuses_the_stored_features(colours: Path, tmp_path: Path) -> None:
    config = _config(colours, tmp_path)
    first = rank(config, [TINY_TIMM, "timm:test_efficientnet"], metric="knn")
    second = rank(config, [TINY_TIMM, "timm:test_efficientnet"], metric="knn")
    assert all(r.features_from == {"train": "computed"} for r in first.rows)
    assert all(r.features_from == {"train": "cache"} for r in second.rows)
    assert [r.scores for r in first.rows] == [r.scores for r in second.rows]


def test_sample_rows_is_seeded_stratified_and_at_most_the_limit() -> None:
    targets = torch.tensor([0] * 700 + [1] * 280 + [2] * 20)  # 70 %, 28 %, 2 %
    rows = sample_rows(targets, 100, seed=3)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100 and list(rows) == sorted(rows)
    assert np.bincount(targets[rows].numpy()).tolist() == [70, 28, 2]
    assert np.array_equal(rows, sample_rows(targets, 100, seed=3))
    assert not np.array_equal(rows, sample_rows(targets, 100, seed=4))
    assert sample_rows(targets, 1000, seed=3) is None and sample_rows(targets, None, seed=3) is None
    # a class too rare for its proportional share still keeps one example; the total stays at the limit
    rare = torch.tensor([0] * 997 + [1, 2, 3])
    picked = sample_rows(rare, 10, seed=0)
    assert len(picked) == 10 and set(rare[picked].tolist()) == {0, 1, 2, 3}
    # fewer examples than classes: exactly the limit, one example each of the largest classes
    three = torch.tensor([0] * 5 + [1] * 3 + [2])
    few = sample_rows(three, 2, seed=0)
    assert len(few) == 2 and sorted(three[few].tolist()) == [0, 1]
    # regression or multi-label targets: a plain seeded sample
    values = torch.randn(50)
    assert len(sample_rows(values, 20, seed=0)) == 20


def test_a_large_split_is_scored_on_a_sample_that_reuses_stored_whole_split_features(colours: Path, tmp_path: Path) -> None:
    config = _config(colours, tmp_path)
    candidates = [TINY_TIMM, "timm:test_efficientnet"]
    sampled = rank(config, candidates, metric="all", max_samples=10)
    assert sampled.train_samples == 24 and sampled.scored_train_samples == 10
    assert all(r.features_from == {"train": "computed", "eval": "computed"} for r in sampled.rows)
    saved = json.loads((tmp_path / "rank.json").read_text())
    assert saved["scored_train_samples"] == 10 and saved["train_samples"] == 24
    assert "on 10 of the 24 training examples" in sampled.table()
    whole = rank(config, candidates, metric="all", max_samples=None)
    assert whole.scored_train_samples == 24 and all(r.features_from["train"] == "computed" for r in whole.rows)
    assert [r.scores for r in whole.rows] != [r.scores for r in sampled.rows]
    # the whole split's stored features now serve the sample: no backbone runs, the same scores
    again = rank(config, candidates, metric="all", max_samples=10)
    assert all(r.features_from == {"train": "cache", "eval": "cache"} for r in again.rows)  # 8 eval images: all used
    for a, b in zip(sampled.rows, again.rows):
        assert a.name == b.name
        for metric in ("logme", "knn", "linear"):
            assert b.scores[metric] == pytest.approx(a.scores[metric], abs=1e-5), (a.name, metric)
    with pytest.raises(ConfigError, match="max_samples must be a number"):
        rank(config, candidates, max_samples=1)


def test_a_class_without_training_examples_leaves_the_logme_ranking_unchanged(colours: Path, tmp_path: Path) -> None:
    candidates = [TINY_TIMM, "timm:test_efficientnet"]
    plain = rank(_config(colours, tmp_path / "plain"), candidates)
    extra = rank(_config(colours, tmp_path / "extra", labels=["blue", "red", "green"]), candidates)  # no green image
    assert [r.name for r in extra.rows] == [r.name for r in plain.rows]
    for a, b in zip(plain.rows, extra.rows):
        assert b.scores["logme"] == pytest.approx(a.scores["logme"], abs=1e-9), a.name


def test_candidates_from_the_config_fall_back_to_its_keys(colours: Path, tmp_path: Path) -> None:
    config = _config(colours, tmp_path, candidates=[
        {"name": "random", "backbone": TINY_TIMM},  # pretrained and backbone_kwargs from the top level
        {"name": "other", "backbone": "timm:test_efficientnet", "backbone_kwargs": {"image_size": 32}},
    ])  # fmt: skip
    result = rank(config)
    by_name = {r.name: r for r in result.rows}
    assert by_name["random"].pretrained is False and by_name["random"].backbone_kwargs == {"image_size": 32}
    assert all(r.ok for r in result.rows)


@pytest.mark.parametrize(
    "candidates, message",
    [
        ([], "No candidates"),
        ([{"backbone": TINY_TIMM, "lr": 1}], "unknown keys"),
        ([TINY_TIMM, TINY_TIMM], "Two candidates are named"),
        ([{"name": "x"}], "backbone name or a mapping"),
    ],
)
def test_bad_candidate_lists_are_config_errors(colours: Path, tmp_path: Path, candidates: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rank(_config(colours, tmp_path), candidates)


def test_one_candidate_and_top_without_train_are_refused_before_anything_runs(
    colours: Path, tmp_path: Path, feature_cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=r"2 or more candidates.*'timm:test_resnet'.*--candidates"):
        rank(_config(colours, tmp_path / "one"), [TINY_TIMM])
    with pytest.raises(ConfigError, match="--top 1 .*add --train"):
        rank(_config(colours, tmp_path / "top"), [TINY_TIMM, "timm:test_efficientnet"], top=1)
    config = tmp_path / "rank.yaml"
    config.write_text(yaml.safe_dump(_config(colours, tmp_path / "cli")))
    assert cli_main(["rank", str(config), "--candidates", TINY_TIMM, "timm:test_efficientnet", "--top", "1"]) == 2
    assert "add --train" in capsys.readouterr().err
    assert not any(feature_cache_dir.iterdir()) and not any(tmp_path.glob("*/rank.json"))  # nothing was computed


def test_fewer_than_two_usable_candidates_is_an_error_naming_the_reasons(colours: Path, tmp_path: Path) -> None:
    with pytest.raises(HubtlError, match=r"Only 1 of 2 candidates.*no_such_model"):
        rank(_config(colours, tmp_path), [TINY_TIMM, "timm:no_such_model"])
    with pytest.raises(ConfigError, match="Unknown ranking metric"):
        rank(_config(colours, tmp_path), [TINY_TIMM, "timm:test_efficientnet"], metric="leep")


@pytest.mark.parametrize("best, key, higher", [(None, "eval_accuracy", True), ("eval_loss", "eval_loss", False)])
def test_top_k_train_fine_tunes_the_best_and_records_kendall_tau(
    colours: Path, tmp_path: Path, capsys, best: str | None, key: str, higher: bool
) -> None:
    config = tmp_path / "rank.yaml"
    config.write_text(yaml.safe_dump(_config(
        colours, tmp_path / "out", strategy="linear_probe", augment=False, learning_rate=0.05, num_train_epochs=2,
        **({"metric_for_best_model": best} if best else {}),
    )))  # fmt: skip
    code = cli_main(["rank", str(config), "--candidates", TINY_TIMM, "timm:test_efficientnet", "--top", "2", "--train"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Ranked by logme" in printed and "Kendall tau" in printed
    saved = json.loads((tmp_path / "out" / "rank.json").read_text())
    # τ counts a lower-is-better metric (the trainer's rule for the best model) reversed
    scores = [r["scores"]["logme"] for r in saved["rows"]]
    values = [r["fine_tuned"]["metric_value"] * (1 if higher else -1) for r in saved["rows"]]
    expected = kendall_tau(scores, values)
    assert saved["kendall_tau_with_fine_tuned"] == (None if math.isnan(expected) else expected)  # null: all tied
    for row in saved["rows"]:
        tuned = row["fine_tuned"]
        assert tuned["metric"] == key and tuned["greater_is_better"] is higher and tuned["metric_value"] >= 0.0
        assert (Path(tuned["output_dir"]) / "model.safetensors").is_file()
        assert Path(tuned["output_dir"]).parent == tmp_path / "out"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_rank_as_one(colours: Path, tmp_path: Path) -> None:
    """Each process computes and stores its shard of the features of the same sample; the main process scores all of them."""
    config = tmp_path / "rank.yaml"
    config.write_text(yaml.safe_dump(_config(colours, tmp_path / "one")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process
    try:
        one = rank(config, [TINY_TIMM, "timm:test_efficientnet"], metric="all", max_samples=20)  # 20 of 24 train
    finally:
        torch.set_num_threads(threads)
    cache = tmp_path / "two-cache"
    env = {**os.environ, "HUBTL_CACHE": str(cache), "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "hubtl.ranking", str(config), "--candidates", TINY_TIMM, "timm:test_efficientnet", "--metric", "all",
        "--max_samples", "20", "--output_dir", str(tmp_path / "two"), "--top", "2", "--train",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "rank.json").read_text())
    # both fine-tuned in the same processes, one after the other (the first run leaves the process group open)
    assert all(row["fine_tuned"] for row in two["rows"]) and "Kendall" in done.stderr + done.stdout
    assert two["scored_train_samples"] == one.scored_train_samples == 20  # the same seeded sample on every process
    assert [r["name"] for r in two["rows"]] == [r.name for r in one.rows]
    for a, b in zip(one.rows, two["rows"]):
        for metric in ("logme", "knn", "linear"):
            assert b["scores"][metric] == pytest.approx(a.scores[metric], abs=1e-6), (a.name, metric)
    # the store holds each process's shard, not one gathered file
    metas = [json.loads(p.read_text()) for p in cache.glob("*/meta.json")]
    assert len(metas) == 4 and all(len(m["shards"]) == 2 for m in metas)


@pytest.mark.parametrize("feature_cache", [True, False], ids=["stored", "in-memory"])
def test_a_candidate_failing_on_one_process_fails_on_all_and_the_others_still_rank(
    tiny_bert: str, tiny_bert_dir: Path, tmp_path: Path, feature_cache: bool
) -> None:
    """Only the second process's shard holds a token the small-vocabulary BERT cannot embed: both report it and go on,
    whether the features go to the store or are only gathered in memory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    small = tmp_path / "small-vocab-bert"  # embeddings for token ids below 1000 only: '!' is 999, 'film' 2143
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(small)  # fmt: skip
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(small)
    data = tmp_path / "data"
    data.mkdir()
    texts = ["! " * (i + 1) for i in range(11)] + ["a good film"]  # rows 6-11 are the second process's shard
    rows = "\n".join(f"{t},{'pos' if i % 2 else 'neg'}" for i, t in enumerate(texts))
    (data / "train.csv").write_text(f"text,label\n{rows}\n")
    (data / "dev.csv").write_text("text,label\n! !,pos\n!,neg\n")
    config = tmp_path / "rank.yaml"
    config.write_text(yaml.safe_dump({
        "backbone": tiny_bert, "backbone_kwargs": {"pooling": "mean"}, "output_dir": str(tmp_path / "out"),
        "dataset": {"path": str(data), "data_files": {"train": "train.csv", "validation": "dev.csv"}}, "seed": 0,
        "disable_tqdm": True, "report_to": "none", "dataloader_num_workers": 0, "per_device_eval_batch_size": 4,
        "feature_cache": feature_cache,
        "candidates": [
            {"name": "mean", "backbone": tiny_bert},
            {"name": "small-vocab", "backbone": f"transformers:{small}"},
            {"name": "cls", "backbone": tiny_bert, "backbone_kwargs": {"pooling": "cls"}},
        ],
    }))  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "hubtl.ranking", str(config),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = {r["name"]: r for r in json.loads((tmp_path / "out" / "rank.json").read_text())["rows"]}
    assert saved["mean"]["error"] is None and saved["cls"]["error"] is None and saved["cls"]["scores"]["logme"]
    failed = saved["small-vocab"]
    assert "IndexError" in failed["error"] and failed["error"].endswith("(on process 1 of 2)") and not failed["scores"]
    assert {r["features_from"]["train"] for r in saved.values() if not r["error"]} == {"computed" if feature_cache else "memory"}
