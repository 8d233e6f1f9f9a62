"""`hubtl.rank`: score candidate backbones on a config's data from their frozen features, best first.

For each candidate, seeded as training seeds, the backbone is built, its features of the train split
(and the eval split for `linear`) come from the feature store or are computed (sharded over processes
under `accelerate launch`, each process writing its own shard), and the main process scores them.
A split larger than `max_samples` is scored on a seeded sample of that many examples, stratified by
class, the same for every candidate: the ranking's cost stops growing with the data set, and stored
features of the whole split are reused when there are some.
A candidate that fails is reported in its row with the reason; the others still rank. Under `accelerate launch`
the processes agree on a candidate's failure after each step that runs on its own, before the next collective call,
so a candidate that fails on one process (on an input of its shard, say) fails on all of them.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import re
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.registry import create_backbone, get_plugin, split_backbone_name
from ..config import TrainingConfig, load_config
from ..data import load_transfer_data
from ..data.loader import default_num_workers
from ..errors import ConfigError, HubtlError
from ..features import backbone_features
from ..metrics import is_better, metric_key
from ..tasks import get_task
from ..processes import agree_on_data, error_line, main_process_first, on_every_process
from .scores import SCORES, check_metric, knn_accuracy, linear_probe_score, logme, target_columns, task_kind

logger = logging.getLogger("hubtl")

#: Examples of a split scored by default: the LogME ranking of SST-2's six candidates was the same on every
#: seeded sample of 500 or more of its 6,920 sentences as on all of them (README, "does LogME pick ...").
DEFAULT_MAX_SAMPLES = 2000

@dataclass
class Candidate:
    """One backbone to score: a row label, the backbone name, whether pretrained, its kwargs."""

    name: str
    backbone: str
    pretrained: bool = True
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RankRow:
    """One candidate's result: its scores (higher is better), feature width, seconds, or why it failed."""

    name: str
    backbone: str
    pretrained: bool
    backbone_kwargs: dict[str, Any]
    scores: dict[str, float] = field(default_factory=dict)
    feature_dim: int | None = None
    seconds: float = 0.0
    features_from: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    fine_tuned: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RankResult:
    """Candidates ranked by `metric` (failed ones last); `to_pandas()`, `to_dict()`, `save(folder)`."""

    metric: str
    rows: list[RankRow]
    task: str
    dataset: str
    train_samples: int
    eval_samples: int
    seconds: float = 0.0
    scored_train_samples: int | None = None

    def __iter__(self) -> Iterator[RankRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def best(self) -> RankRow:
        """The top-ranked usable candidate."""
        return next(row for row in self.rows if row.ok)

    def sort(self, metric: str | None = None) -> RankResult:
        """Order rows by a score (default: the ranking metric), best first; failed rows last."""
        key = metric or self.metric
        self.rows.sort(key=lambda r: (not r.ok, -r.scores.get(key, -math.inf)))
        return self

    def fine_tuned_rows(self) -> list[RankRow]:
        """The usable rows fine-tuned with `--train` that have a value of the fine-tuned main metric."""
        return [r for r in self.rows if r.ok and r.fine_tuned and r.fine_tuned.get("metric_value") is not None]

    def kendall_tau(self, metric: str | None = None) -> float | None:
        """Kendall's τ-b between a score and how good the fine-tuned main metric is; None if undefined or untrained."""
        rows = self.fine_tuned_rows()
        if len(rows) < 2:
            return None
        # a metric that is better when lower (eval_loss, eval_rmse) counts negated, so τ > 0 means the score agrees
        tuned = [r.fine_tuned["metric_value"] * (1 if r.fine_tuned.get("greater_is_better", True) else -1) for r in rows]
        tau = kendall_tau([r.scores[metric or self.metric] for r in rows], tuned)
        return None if math.isnan(tau) else tau  # every fine-tuned value (or every score) tied: no ranking to compare

    def to_dict(self) -> dict[str, Any]:
        """rank.json's content."""
        out = {
            "metric": self.metric, "task": self.task, "dataset": self.dataset, "train_samples": self.train_samples,
            "eval_samples": self.eval_samples, "scored_train_samples": self.scored_train_samples,
            "seconds": round(self.seconds, 3),
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }  # fmt: skip
        if len(self.fine_tuned_rows()) >= 2:
            out["kendall_tau_with_fine_tuned"] = self.kendall_tau()  # null: undefined, every value tied
        return out

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise HubtlError("RankResult.to_pandas() needs pandas: pip install pandas.") from None
        flat = []
        for r in self.rows:
            row = {"name": r.name, "backbone": r.backbone, "pretrained": r.pretrained, **r.scores}
            row.update({"feature_dim": r.feature_dim, "seconds": r.seconds, "error": r.error})
            if r.fine_tuned:
                row["fine_tuned"] = r.fine_tuned.get("metric_value")
            flat.append(row)
        return pd.DataFrame(flat)

    def table(self) -> str:
        """The ranking as a console table."""
        from .report import format_table

        return format_table(self)

    def save(self, folder: str | Path) -> list[Path]:
        """Write rank.json and rank.png into `folder`; returns the files written."""
        from .report import write_report

        return write_report(self, Path(folder))


def parse_candidates(items: list[Any] | None, config: TrainingConfig) -> list[Candidate]:
    """Candidates from names or mappings {name, backbone, pretrained, backbone_kwargs}; missing keys come from the config."""
    if not items:
        raise ConfigError(
            "No candidates to rank: pass --candidates A B ... (backbone names), or a `candidates:` list in the config."
        )
    found, names = [], set()
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"backbone": item}
        if not isinstance(item, dict) or not isinstance(item.get("backbone"), str):
            raise ConfigError(
                f"Candidate #{i + 1} ({item!r}) must be a backbone name or a mapping with a `backbone` name, e.g. "
                "{name: minilm-cls, backbone: transformers:..., backbone_kwargs: {pooling: cls}}."
            )
        unknown = set(item) - {"name", "backbone", "pretrained", "backbone_kwargs"}
        if unknown:
            raise ConfigError(
                f"Candidate #{i + 1} has unknown keys {sorted(unknown)}; use name, backbone, pretrained, backbone_kwargs."
            )
        kwargs = item.get("backbone_kwargs", config.backbone_kwargs)
        pretrained = item.get("pretrained", config.pretrained)
        if not isinstance(kwargs, dict) or not isinstance(pretrained, bool):
            raise ConfigError(f"Candidate #{i + 1}: backbone_kwargs must be a mapping and pretrained true or false.")
        name = str(item.get("name") or item["backbone"])
        if name in names:
            raise ConfigError(f"Two candidates are named {name!r}; give each a distinct `name`.")
        names.add(name)
        found.append(Candidate(name, item["backbone"], pretrained, dict(kwargs)))
    return found


def rank(
    config: TrainingConfig | dict[str, Any] | str | Path,
    candidates: list[Any] | None = None,
    metric: str = "logme",
    *,
    output_dir: str | Path | None = None,
    top: int = 0,
    train: bool = False,
    overrides: list[str] | None = None,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> RankResult:
    """Rank candidate backbones for the config's data and task by a transferability score (`metric`: logme, knn,
    linear or all), each split scored on at most `max_samples` examples (None: all of them); `top=K, train=True`
    then fine-tunes the best K with the config's strategy."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import broadcast_object_list, set_seed

    started = time.time()
    cfg = config if isinstance(config, TrainingConfig) else load_config(config, overrides)
    if isinstance(config, TrainingConfig) and overrides:
        cfg = load_config(config.to_dict(), overrides)
    wanted = check_metric(metric)
    chosen = parse_candidates(candidates if candidates is not None else cfg.candidates, cfg)
    if len(chosen) < 2:
        raise ConfigError(
            f"Ranking compares 2 or more candidates, and got only {chosen[0].name!r}: add others with --candidates "
            "A B ... (or to the config's `candidates:` list), or fine-tune the one backbone with `hubtl train`."
        )
    if top < 0 or (train and top < 1):
        raise ConfigError("--top must be a positive number of candidates to fine-tune (with --train).")
    if top and not train:
        raise ConfigError(
            f"--top {top} only says how many of the best candidates --train fine-tunes, and does nothing alone: add "
            "--train to fine-tune them (hubtl.rank(..., top=K, train=True)), or leave --top out."
        )
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2):
        raise ConfigError(
            f"max_samples must be a number of examples (2 or more), or None / `--max_samples all` for every one; "
            f"got {max_samples!r}."
        )
    if cfg.dataset.streaming:
        raise ConfigError(
            "hubtl rank scores every training example at once and cannot read a stream: rank on a finite sample "
            "(--dataset.streaming false --dataset.max_train_samples 2000), then train with streaming."
        )
    output = Path(output_dir if output_dir is not None else cfg.output_dir)
    modality = _modality(chosen)
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(mixed_precision=cfg.mixed_precision)
    task = get_task(cfg.task)
    set_seed(cfg.seed)
    data = main_process_first(acc, lambda: load_transfer_data(
        cfg.dataset, task=cfg.task, modality=modality, labels=cfg.labels, num_outputs=cfg.num_outputs, seed=cfg.seed,
        strict=cfg.strict, progress=acc.is_main_process and not cfg.disable_tqdm,
    ))  # fmt: skip
    agree_on_data(acc, data)
    sample = {"train": sample_rows(data.train.targets, max_samples, cfg.seed),
              "eval": sample_rows(data.eval.targets, max_samples, cfg.seed)}  # fmt: skip
    scored = len(data.train) if sample["train"] is None else len(sample["train"])
    if acc.is_main_process and scored < len(data.train):
        logger.info("Scoring every candidate on the same %d of the %d training examples (a seeded sample, stratified "
                    "by class; --max_samples all scores every one).", scored, len(data.train))  # fmt: skip
    for split in ("train", "eval") if "linear" in wanted else ("train",):
        classes = _class_count(getattr(data, split).targets)
        if acc.is_main_process and max_samples is not None and classes > max_samples:
            logger.warning("--max_samples %d is fewer than the %d classes of the %s split: its sample holds one example "
                           "of each of its %d largest classes and none of the others. Pass --max_samples %d or more (or "
                           "all) to score every class.", max_samples, classes, split, max_samples, classes)  # fmt: skip
    rows = []
    for candidate in chosen:
        row = _score(acc, cfg, candidate, data, task, wanted, sample)
        rows.append(row)
        if acc.is_main_process:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in row.scores.items()) if row.ok else f"failed: {row.error}"
            logger.info("%s: %s (%.1f s)", candidate.name, shown, row.seconds)
    box = [rows]
    if acc.num_processes > 1:
        broadcast_object_list(box)  # the main process's scores, for every process (the --train choice)
    result = RankResult(
        wanted[0], box[0], cfg.task, cfg.dataset.source, len(data.train), len(data.eval), time.time() - started, scored
    ).sort()
    usable = [r for r in result.rows if r.ok]
    if len(usable) < 2:
        reasons = "; ".join(f"{r.name}: {r.error}" for r in result.rows if not r.ok) or "none failed"
        raise HubtlError(
            f"Only {len(usable)} of {len(result.rows)} candidates could be scored, and ranking needs 2 or more "
            f"({reasons}). Fix the failing candidates or add others."
        )
    if acc.is_main_process:
        result.save(output)
    acc.wait_for_everyone()
    if train and top:
        _fine_tune_top(result, cfg, output, top, acc.is_main_process)
    return result


def _modality(candidates: list[Candidate]) -> str:
    """The one modality of every candidate's plugin (ranking compares backbones on one dataset)."""
    modalities = {}
    for c in candidates:
        plugin, _ = split_backbone_name(c.backbone)
        try:
            modalities[c.name] = get_plugin(plugin).modality
        except HubtlError:
            continue  # reported in the candidate's row
    kinds = set(modalities.values())
    if len(kinds) > 1:
        raise ConfigError(f"Candidates mix modalities ({modalities}); rank image or text backbones, not both at once.")
    if not kinds:
        raise ConfigError(f"None of the candidates' plugins is available: {[c.backbone for c in candidates]}.")
    return kinds.pop()


def _class_count(targets: Any) -> int:
    """How many classes occur in class-index targets (0 for multi-label or regression targets)."""
    targets = np.asarray(targets)
    return len(np.unique(targets)) if targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer) else 0


def sample_rows(targets: Any, limit: int | None, seed: int) -> np.ndarray | None:
    """A seeded sample of at most `limit` rows, in data order, stratified by class for class-index targets
    (every class keeps at least one example while there are no more classes than `limit`); None when every row is wanted."""
    targets = np.asarray(targets)
    n = len(targets)
    if limit is None or limit >= n:
        return None
    rng = np.random.default_rng(seed)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        return np.sort(rng.permutation(n)[:limit])
    classes, counts = np.unique(targets, return_counts=True)
    if len(classes) > limit:  # one example each of the `limit` largest classes (ties in seeded order), none of the rest
        quota = np.zeros(len(classes), dtype=np.int64)
        quota[np.lexsort((rng.permutation(len(classes)), -counts))[:limit]] = 1
    else:
        share = counts * limit / n
        quota = np.maximum(np.floor(share).astype(np.int64), 1)
        for i in np.argsort(-(share - np.floor(share)), kind="stable")[: max(0, limit - int(quota.sum()))]:
            quota[i] += 1  # the rest by largest remainder
        while quota.sum() > limit:  # more classes than a proportional share allows: take from the largest quotas
            quota[np.argmax(quota)] -= 1
    picked = [rng.permutation(np.flatnonzero(targets == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def _score(
    acc: Any, cfg: TrainingConfig, candidate: Candidate, data: Any, task: Any, wanted: list[str],
    sample: dict[str, np.ndarray | None],
) -> RankRow:  # fmt: skip
    """Build one candidate (seeded as training does), get its features of the sampled rows, score them on the main process."""
    from accelerate.utils import set_seed

    row = RankRow(candidate.name, candidate.backbone, candidate.pretrained, candidate.backbone_kwargs)
    started = time.time()
    backbone = None

    def build() -> tuple[Any, Any]:
        set_seed(cfg.seed)
        built = create_backbone(candidate.backbone, pretrained=candidate.pretrained, **candidate.backbone_kwargs)
        built.requires_grad_(False).to(acc.device)
        return built, built.preprocessor(train=False)

    try:
        backbone, preprocess = on_every_process(acc, build)
        splits = {"train": data.train, **({"eval": data.eval} if "linear" in wanted else {})}
        features = {}
        for split, dataset in splits.items():
            found = backbone_features(
                acc, backbone, dataset, preprocess, task=cfg.task, batch_size=cfg.per_device_eval_batch_size,
                num_workers=default_num_workers(data.modality, cfg.dataloader_num_workers), seed=cfg.seed,
                describe={"backbone": candidate.backbone, "dataset": cfg.dataset.source, "split": split},
                progress=f"{candidate.name} ({split})" if acc.is_main_process and not cfg.disable_tqdm else None,
                rows=sample[split], persist=cfg.feature_cache,
            )  # fmt: skip
            row.features_from[split] = found.source
            features[split] = found.dataset
        dim = getattr(backbone, "feature_dim", None)
        row.feature_dim = int(dim if dim is not None else features["train"].matrix().shape[1])
        if acc.is_main_process:  # no collective call follows before the next candidate: a failure here is the main's own
            row.scores = _scores(features, task, data.labels, wanted)
    except Exception as err:  # noqa: BLE001 - any failure of a candidate is reported in its row; the others still rank
        row.error = error_line(err)
    finally:
        held = weakref.ref(backbone) if backbone is not None else None
        del backbone
        if held is not None and held() is not None:
            gc.collect()  # a reference cycle keeps it: free its memory before the next candidate is built
    row.seconds = round(time.time() - started, 3)
    return row


def _scores(features: dict[str, Any], task: Any, labels: list[str] | None, wanted: list[str]) -> dict[str, float]:
    """Each wanted score of the features (train; eval for `linear`)."""
    x = features["train"].matrix().numpy()
    y = features["train"].targets.numpy()
    kind = task_kind(task, y)
    scores = {}
    for name in wanted:
        if name == "logme":
            scores[name] = logme(x, target_columns(y, kind, len(labels) if labels else None))
        elif name == "knn":
            scores[name] = knn_accuracy(x, y, kind=kind)
        elif name == "linear":
            ev = features["eval"]
            scores[name] = linear_probe_score(x, y, ev.matrix().numpy(), ev.targets.numpy(), task, labels)
        else:  # check_metric lets only SCORES through
            raise ConfigError(f"Unknown score {name!r}; use one of {', '.join(SCORES)}.")
        if not np.isfinite(scores[name]):
            raise ValueError(f"the {name} score is not finite ({scores[name]}); the features may hold NaN or inf")
    return scores


def _fine_tune_top(result: RankResult, cfg: TrainingConfig, output: Path, top: int, main: bool) -> None:
    """Fine-tune the best `top` candidates with the config's strategy, each in `output/<name>`, and record the results."""
    from ..training import Trainer

    for row in [r for r in result.rows if r.ok][:top]:
        values = cfg.to_dict()
        values.update(
            backbone=row.backbone, pretrained=row.pretrained, backbone_kwargs=row.backbone_kwargs, candidates=None,
            output_dir=str(output / _folder_name(row.name)), push_to_hub=None,
        )  # fmt: skip
        trained = Trainer(TrainingConfig.from_dict(values)).run()
        key = metric_key(cfg.metric_for_best_model or get_task(cfg.task).default_metric)
        row.fine_tuned = {
            "output_dir": str(trained.output_dir), "metric": key, "metric_value": trained.eval_results.get(key),
            "greater_is_better": is_better(key, 1.0, 0.0, cfg.greater_is_better),  # the trainer's rule for "best"
            "eval_results": {k: v for k, v in trained.eval_results.items() if isinstance(v, (int, float))},
        }  # fmt: skip
    if main:
        result.save(output)


def _folder_name(name: str) -> str:
    """A candidate's name as a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "candidate"


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-b rank correlation of two equally long sequences (ties as in scipy's default; NaN when undefined)."""
    n = len(a)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator else math.nan  # one side all ties, as in scipy
