"""Knowledge distillation: a fine-tuned teacher's outputs as targets, unlabeled examples, a student built from its layers.

`strategy: distill` with `teacher: <folder or Hub ID>` trains the student on

    distill_alpha * task_loss(labels) + (1 - distill_alpha) * soft_loss(student, teacher)

where the soft loss is T² · KL(softmax(teacher / T) ‖ softmax(student / T)) for classification
(T = `distill_temperature`), per-label binary cross-entropy to the teacher's sigmoids for multi-label and the
mean squared error to the teacher's outputs for regression (no temperature for those two). Per batch, the
task's loss is taken over the labeled examples and weighted by their share of the batch, and the soft loss
is the mean over every example: an unlabeled example (`dataset.unlabeled_split` / `unlabeled_files`)
contributes the soft loss only.

The teacher runs in eval mode under `inference_mode` and the student's mixed precision, on every process
(replicated, never wrapped for training). Its outputs are cached like backbone features: when its
preprocessing is deterministic (and `feature_cache` is on), they are computed once per example at the start
of the run, sharded over the processes and gathered on all of them, kept in the persistent feature store
(keyed by the teacher's weights, preprocessing and the inputs, so a later run or a resume reads them back
instead of running the teacher) and held in the training dataset beside the labels. Otherwise the teacher
runs on each batch.

`init_from_teacher` (every_other | first_k | [i, j, ...]) copies the teacher's embeddings and the chosen
layers of its fine-tuned encoder into the student, through the backbone's `transfer_layers()` hook.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from .backbones.base import Backbone, in_given_order
from .data.lengths import longest_first
from .errors import ConfigError
from .objectives import Objective
from .processes import gathered_rows, on_every_process, process_slice
from .tasks import Classification, MultiLabel, Regression, Task, get_task

if TYPE_CHECKING:
    from .config import TrainingConfig
    from .data import TransferData
    from .model import TransferModel  # annotations only: the model's module reaches the cards, which read strategies

logger = logging.getLogger("hubtl")

#: Named choices of `init_from_teacher` (besides an explicit list of teacher layer indices).
LAYER_CHOICES = ("every_other", "first_k")
#: Key of the teacher's batch inside a training batch, when the teacher runs on each batch (no cache).
TEACHER_BATCH = "teacher_batch"
#: Examples of the eval split timed for the card's CPU latency (one batch), and timed repetitions.
LATENCY_BATCH, LATENCY_REPEATS = 32, 5


# --------------------------------------------------------------------------- the loss


def soft_loss(task: Task, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example loss of the student's outputs towards the teacher's: T²·KL, BCE to sigmoids, or MSE (by the task's kind)."""
    student, teacher = student.float(), teacher.float()
    if isinstance(task, Classification):
        t = temperature
        log_p_student = nn.functional.log_softmax(student / t, dim=-1)
        log_p_teacher = nn.functional.log_softmax(teacher / t, dim=-1)
        kl = nn.functional.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(-1)
        return kl * t * t
    if isinstance(task, MultiLabel):
        bce = nn.functional.binary_cross_entropy_with_logits(student, teacher.sigmoid(), reduction="none")
        return bce.mean(-1)
    if isinstance(task, Regression):
        return ((student - teacher.view_as(student)) ** 2).reshape(len(student), -1).mean(-1)
    raise ConfigError(
        f"strategy: distill has no loss towards a teacher for task {task.name!r}; it knows classification, multi_label "
        "and regression (and tasks that subclass them). Subclass one of those, or use another strategy."
    )


def distillation_loss(
    task: Task, student: torch.Tensor, targets: torch.Tensor, labeled: torch.Tensor, teacher: torch.Tensor,
    alpha: float, temperature: float,
) -> torch.Tensor:  # fmt: skip
    """alpha · task loss over the labeled examples (weighted by their share of the batch) + (1 − alpha) · mean soft loss."""
    mask = labeled.bool()
    if alpha == 1:  # labels only: the teacher's outputs weigh nothing (and were not computed)
        return task.loss(student[mask], targets[mask]) * (mask.sum() / len(mask)) if bool(mask.any()) else student.sum() * 0.0
    soft = soft_loss(task, student, teacher, temperature).mean()
    if alpha == 0 or not bool(mask.any()):
        return (1 - alpha) * soft
    hard = task.loss(student[mask], targets[mask]) * (mask.sum() / len(mask))
    return alpha * hard + (1 - alpha) * soft


# --------------------------------------------------------------------------- the student from the teacher's layers


def check_layer_choice(choice: Any) -> None:
    """Refuse an `init_from_teacher` value that is neither a named choice nor a list of layer indices."""
    if choice is None or choice in LAYER_CHOICES:
        return
    if isinstance(choice, list) and choice and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in choice):
        if len(set(choice)) == len(choice):
            return
    raise ConfigError(
        f"init_from_teacher must be every_other, first_k or a list of distinct teacher layer indices (0 = the lowest), "
        f"e.g. [1, 3, 5]; got {choice!r}."
    )


def teacher_layer_indices(choice: str | list[int], teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer copied into each student layer, from the bottom up.

    every_other: evenly spaced and ending with the top layer (teacher layer (j + 1)·n // k − 1 for student layer j;
    for k = n / 2 that is layers 1, 3, 5, ...); first_k: the lowest k layers; a list: those layers, in that order.
    """
    check_layer_choice(choice)
    n, k = teacher_layers, student_layers
    if isinstance(choice, list):
        if len(choice) != k:
            raise ConfigError(
                f"init_from_teacher lists {len(choice)} teacher layers but the student has {k}; list {k} indices or set "
                f"backbone_kwargs: {{num_hidden_layers: {len(choice)}}}."
            )
        if max(choice) >= n:
            raise ConfigError(f"init_from_teacher names layer {max(choice)}, but the teacher has layers 0 to {n - 1}.")
        return list(choice)
    if k > n:
        raise ConfigError(
            f"The student has {k} layers and the teacher {n}: a student built from the teacher's layers needs at most "
            f"{n}. Set backbone_kwargs: {{num_hidden_layers: k}} with k <= {n}."
        )
    if choice == "first_k":
        return list(range(k))
    return [(j + 1) * n // k - 1 for j in range(k)]


def init_from_teacher(student: Backbone, teacher: Backbone, choice: str | list[int]) -> list[int]:
    """Copy the teacher's embeddings and chosen layers into the student backbone (weights equal); return the layers used."""
    student_embeddings, student_layers = student.transfer_layers()
    teacher_embeddings, teacher_layers = teacher.transfer_layers()
    indices = teacher_layer_indices(choice, len(teacher_layers), len(student_layers))
    _copy(student_embeddings, teacher_embeddings, "embeddings")
    for j, i in enumerate(indices):
        _copy(student_layers[j], teacher_layers[i], f"layer {j} (from teacher layer {i})")
    return indices


def _copy(target: nn.Module, source: nn.Module, what: str) -> None:
    """Load `source`'s weights into `target` after checking that names and shapes agree."""
    mine, theirs = target.state_dict(), source.state_dict()
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        differ = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k].shape != theirs[k].shape]
        raise ConfigError(
            f"init_from_teacher: the student's {what} differs from the teacher's ({', '.join(differ[:3])}...). Build the "
            "student from the teacher's own backbone (the same width and vocabulary), with fewer layers through "
            "backbone_kwargs: {num_hidden_layers: k}."
        )
    with torch.no_grad():
        target.load_state_dict(theirs)


# --------------------------------------------------------------------------- the teacher


def load_teacher(
    model_class: type[TransferModel], source: str, task: str, labels: list[str] | None, modality: str, num_outputs: int
) -> TransferModel:
    """Load the teacher (folder or Hub ID) with `model_class.from_pretrained`; check its task, labels and outputs."""
    teacher = model_class.from_pretrained(source)
    if teacher.task != task:
        raise ConfigError(
            f"The teacher {source} is a {teacher.task} model, but this run's task is {task}. Distill from a teacher "
            f"fine-tuned on the same task, or set task: {teacher.task}."
        )
    if teacher.backbone.modality != modality:
        raise ConfigError(f"The teacher {source} reads {teacher.backbone.modality} inputs, but the data is {modality}.")
    if get_task(task).uses_labels and list(teacher.labels or []) != list(labels or []):
        raise ConfigError(
            f"The teacher {source} predicts the labels {teacher.labels}, but the data's labels are {labels}. Distill "
            f"from a teacher fine-tuned on these labels, or set labels: {teacher.labels} (the teacher's order)."
        )
    if teacher.head.config.num_outputs != num_outputs:
        raise ConfigError(
            f"The teacher {source} has {teacher.head.config.num_outputs} outputs and the student {num_outputs}; "
            f"set num_outputs: {teacher.head.config.num_outputs}."
        )
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.inference_mode()
def teacher_outputs(
    accelerator: Any, teacher: nn.Module, inputs: TorchDataset, preprocess: Callable[[list[Any]], Any], batch_size: int,
    seed: int, targets: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The teacher's outputs for every example of `inputs` (raw inputs, or (raw, target) pairs when `targets`), once.

    Each process runs its share (texts of similar length batched together: short padding), in eval mode with the
    run's mixed precision; the shares are gathered on every process, in the dataset's order. A failure on one process
    (an input only its share holds) stops all of them, instead of leaving the others waiting at the gather.
    """
    collate = _PairCollate(preprocess) if targets else _InputCollate(preprocess)
    share = list(process_slice(len(inputs), accelerator))  # type: ignore[arg-type]
    order = longest_first(inputs, preprocess, share, pairs=targets)

    def run_share() -> tuple[torch.Tensor, torch.Tensor]:
        rows = share if order is None else [share[i] for i in order]
        loader = DataLoader(Subset(inputs, rows), batch_size, shuffle=False, collate_fn=collate,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
        teacher.eval()
        outputs, shared_targets = [], []
        with accelerator.autocast():
            for batch, target in loader:
                batch = {k: v.to(accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                outputs.append(teacher(batch).float().cpu())
                shared_targets.append(target)
        if not outputs:
            return torch.zeros((0, teacher.head.config.num_outputs)), torch.zeros(0)
        return in_given_order(torch.cat(outputs), order), in_given_order(torch.cat(shared_targets), order)

    mine, my_targets = on_every_process(accelerator, run_share)
    return gathered_rows(accelerator, mine), gathered_rows(accelerator, my_targets) if targets else None


def _stored_teacher_outputs(
    accelerator: Any, teacher: nn.Module, dataset: DistillationDataset, preprocess: Any, batch_size: int,
    config: TrainingConfig,
) -> tuple[torch.Tensor, str]:  # fmt: skip
    """The teacher's outputs for every training example: from the feature store when a run computed them before.

    Keyed by the teacher's weights, spec, task and labels, its preprocessing, the labeled and unlabeled inputs
    and the autocast dtype; computed (and stored) when the inputs cannot be fingerprinted too, never stale.
    """
    from .features import cached_outputs, weights_fingerprint

    def compute() -> torch.Tensor:
        return teacher_outputs(accelerator, teacher, _Inputs(dataset), preprocess, batch_size, config.seed)[0]

    parts_of_inputs = [dataset.labeled, *([dataset.unlabeled] if dataset.unlabeled is not None else [])]
    if not all(hasattr(part, "input_fingerprint") for part in parts_of_inputs):
        return compute(), "memory"
    parts = {
        "kind": "teacher_outputs", "weights": weights_fingerprint(teacher), "spec": teacher.backbone.spec(),
        "task": teacher.task, "labels": teacher.labels, "preprocess": [type(preprocess).__qualname__, preprocess.config()],
        "inputs": [part.input_fingerprint() for part in parts_of_inputs], "precision": accelerator.mixed_precision,
    }  # fmt: skip
    describe = {"backbone": f"teacher {_teacher_name(str(config.teacher))}", "dataset": config.dataset.source,
                "split": "train + unlabeled" if dataset.unlabeled is not None else "train"}  # fmt: skip
    return cached_outputs(accelerator, parts, compute, describe)


class _InputCollate:
    """Preprocess raw inputs; a dummy target keeps the (batch, target) shape of the pair collate."""

    def __init__(self, preprocess: Callable[[list[Any]], Any]) -> None:
        self.preprocess = preprocess

    def __call__(self, inputs: list[Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.preprocess(list(inputs)), torch.zeros(len(inputs))


class _PairCollate(_InputCollate):
    """Preprocess the raw inputs of (raw, target) pairs and stack the targets."""

    def __call__(self, pairs: list[Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # type: ignore[override]
        return self.preprocess([raw for raw, _ in pairs]), torch.stack([torch.as_tensor(t) for _, t in pairs])


# --------------------------------------------------------------------------- the training data


class DistillationDataset(TorchDataset):
    """Labeled then unlabeled examples as (raw input, packed target): [target | labeled flag | teacher outputs].

    The target of an unlabeled example is zeros (its flag is 0); the teacher's outputs are NaN when they are
    not cached (the teacher then runs on each batch).
    """

    def __init__(
        self, labeled: TorchDataset, unlabeled: TorchDataset | None, target_width: int, num_outputs: int,
        teacher: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        self.labeled, self.unlabeled = labeled, unlabeled
        self.target_width, self.num_outputs = target_width, num_outputs
        self.teacher = teacher
        self.num_labeled = len(labeled)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.num_labeled + (len(self.unlabeled) if self.unlabeled is not None else 0)  # type: ignore[arg-type]

    def raw_input(self, index: int) -> Any:
        """The raw input of example `index` (labeled first, then unlabeled)."""
        if index < self.num_labeled:
            return self.labeled[index][0]
        return self.unlabeled[index - self.num_labeled]  # type: ignore[index]

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        if index < self.num_labeled:
            raw, target = self.labeled[index]
            target, flag = torch.as_tensor(target, dtype=torch.float32).reshape(-1), 1.0
        else:
            raw = self.unlabeled[index - self.num_labeled]  # type: ignore[index]
            target, flag = torch.zeros(self.target_width), 0.0
        teacher = self.teacher[index] if self.teacher is not None else torch.full((self.num_outputs,), float("nan"))
        return raw, torch.cat([target, torch.tensor([flag]), teacher.float()])


class _Inputs(TorchDataset):
    """The raw inputs of a DistillationDataset (what the teacher reads)."""

    def __init__(self, dataset: DistillationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset.raw_input(index)


class DistillationCollate:
    """(raw, packed target) pairs into (student batch, packed targets); the teacher's batch rides along when uncached."""

    def __init__(self, preprocess: Callable[[list[Any]], Any], teacher_preprocess: Callable[[list[Any]], Any] | None) -> None:
        self.preprocess, self.teacher_preprocess = preprocess, teacher_preprocess

    def __call__(self, examples: Sequence[tuple[Any, torch.Tensor]]) -> tuple[dict[str, Any], torch.Tensor]:
        inputs = [raw for raw, _ in examples]
        batch = dict(self.preprocess(inputs))
        if self.teacher_preprocess is not None:
            batch[TEACHER_BATCH] = dict(self.teacher_preprocess(inputs))
        return batch, torch.stack([packed for _, packed in examples])


# --------------------------------------------------------------------------- the objective


class Distillation(Objective):
    """The distill strategy's objective for one run: teacher, cached outputs, unlabeled data, loss, card facts."""

    def __init__(self, model: TransferModel, data: TransferData, config: TrainingConfig, accelerator: Any) -> None:
        from .data.unlabeled import has_unlabeled, load_unlabeled
        from .processes import main_process_first

        task = get_task(config.task)
        self.config, self.accelerator, self.data = config, accelerator, data
        self.alpha, self.temperature = config.distill_alpha, config.distill_temperature
        num_outputs = model.head.config.num_outputs
        teacher = main_process_first(accelerator, lambda: load_teacher(
            type(model), str(config.teacher), config.task, data.labels, data.modality, num_outputs
        ))  # fmt: skip
        self.teacher = teacher.to(accelerator.device)
        self.layers = None
        if config.init_from_teacher is not None:
            self.layers = init_from_teacher(model.backbone, teacher.backbone, config.init_from_teacher)
            _log(accelerator, f"Student built from the teacher: embeddings and teacher layers {self.layers} copied.")
        unlabeled = None
        if has_unlabeled(config.dataset):
            column = getattr(data.train, "column", None)
            unlabeled = main_process_first(accelerator, lambda: load_unlabeled(config.dataset, data.modality, column, config.seed))
        self.unlabeled_source = getattr(unlabeled, "description", None)
        self.num_unlabeled = len(unlabeled) if unlabeled is not None else 0
        target_width = 1 if task.target_dtype() == torch.long else _target_width(data.train)
        self.target_width, self.num_outputs = target_width, num_outputs
        dataset = DistillationDataset(data.train, unlabeled, target_width, num_outputs)
        super().__init__(task, dataset)

        teacher_preprocess = teacher.preprocessor(train=False)
        self.cached = bool(config.feature_cache and teacher_preprocess.deterministic)
        self.teacher_outputs_from: str | None = None
        batch = config.per_device_eval_batch_size
        if self.alpha == 1:  # the soft loss weighs nothing: the teacher never runs on the training examples
            self.cached, self.teacher_outputs_from = True, "unused"
            _log(accelerator, "distill_alpha: 1 trains on the labels only: the teacher runs on the evaluation split, "
                              "for the card, and not on the training examples.")  # fmt: skip
        elif self.cached:
            dataset.teacher, self.teacher_outputs_from = _stored_teacher_outputs(
                accelerator, self.teacher, dataset, teacher_preprocess, batch, config
            )
            where = {"cache": "read from the feature cache (computed by an earlier run)",
                     "computed": "computed once and stored in the feature cache"}.get(self.teacher_outputs_from, "computed once")
            _log(accelerator, f"The teacher's outputs on {len(dataset)} training examples: {where}.")
        else:
            why = "feature_cache: false" if not config.feature_cache else "its preprocessing is random"
            _log(accelerator, f"The teacher runs on every training batch ({why}).")
        self.teacher_preprocess = None if self.cached else teacher_preprocess
        logits, targets = teacher_outputs(accelerator, self.teacher, data.eval, teacher_preprocess, batch, config.seed, targets=True)
        results = task.compute_metrics(logits, targets.to(task.target_dtype()), data.labels, teacher.threshold)
        results = {"eval_loss": task.loss(logits, targets.to(task.target_dtype())).item(), **results}
        self.teacher_results = {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.teacher_parameters = sum(p.numel() for p in teacher.parameters())
        self.latency: dict[str, Any] = {}
        _log(accelerator, "Teacher on the eval split: " + " ".join(f"{k}={v:.4g}" for k, v in self.teacher_results.items()))

    def collate(self, preprocessor: Callable[[list[Any]], Any], task: str) -> DistillationCollate:
        """Student batches with packed targets; with the teacher's own batch when its outputs are not cached."""
        return DistillationCollate(preprocessor, self.teacher_preprocess)

    def loss(self, module: nn.Module, batch: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        """The distillation loss of a batch (the teacher runs here when its outputs are not cached)."""
        teacher_batch = batch.pop(TEACHER_BATCH, None)
        logits = module(batch)
        width = self.target_width
        labels, labeled, teacher = targets[:, :width], targets[:, width], targets[:, width + 1 :]
        labels = labels[:, 0].to(self.task.target_dtype()) if self.task.target_dtype() == torch.long else labels
        if teacher_batch is not None:
            with torch.inference_mode(), self.accelerator.autocast():
                out = self.teacher(teacher_batch).float()
            teacher = out.clone()  # a normal tensor: autograd may save it
        return distillation_loss(self.task, logits, labels, labeled, teacher, self.alpha, self.temperature)

    def finish(self, model: nn.Module) -> None:
        """Time the student and the teacher on one batch of the eval split on the CPU (the card's latency row)."""
        self.teacher.to("cpu")
        inputs = [self.data.eval[i][0] for i in range(min(LATENCY_BATCH, len(self.data.eval)))]  # type: ignore[arg-type]
        self.latency = {
            "batch": len(inputs),
            "threads": torch.get_num_threads(),
            "student_ms": cpu_latency_ms(model, inputs),
            "teacher_ms": cpu_latency_ms(self.teacher, inputs),
        }

    def summary(self) -> dict[str, Any]:
        """summary.json's `distillation` entry: teacher, alpha, temperature, data, the teacher's results, sizes, latency."""
        return {
            "distillation": {
                "teacher": _teacher_name(str(self.config.teacher)),
                "alpha": self.alpha,
                "temperature": self.temperature,
                "init_from_teacher": self.config.init_from_teacher,
                "teacher_layers": self.layers,
                "labeled_examples": self.train_dataset.num_labeled,
                "unlabeled_examples": self.num_unlabeled,
                "unlabeled_source": self.unlabeled_source,
                "teacher_outputs_cached": self.cached,
                "teacher_outputs_from": self.teacher_outputs_from,
                "teacher_results": self.teacher_results,
                "teacher_parameters": self.teacher_parameters,
                "teacher_base_model": getattr(self.teacher.backbone, "base_model", None),
                "cpu_latency": self.latency,
            }
        }


def cpu_latency_ms(model: TransferModel, inputs: list[Any], repeats: int = LATENCY_REPEATS) -> float:
    """Median milliseconds of `model.logits(inputs)` (preprocessing included) on the CPU, after one warm-up call."""
    model.to("cpu")
    model.logits(inputs, batch_size=len(inputs))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.logits(inputs, batch_size=len(inputs))
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def _teacher_name(teacher: str) -> str:
    """The teacher as recorded: a local folder as its absolute path (the card publishes only its name), else the Hub ID."""
    import os

    path = os.path.expanduser(teacher)
    return os.path.abspath(path) if os.path.isdir(path) else teacher


def _target_width(dataset: TorchDataset) -> int:
    """Width of one example's target (multi-label or regression), from the first example."""
    return int(torch.as_tensor(dataset[0][1]).numel())  # type: ignore[index]


def _log(accelerator: Any, message: str) -> None:
    """Log on the main process only."""
    if accelerator.is_main_process:
        logger.info(message)
