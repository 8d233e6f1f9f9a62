"""Fine-tuning strategies: which parameters train, at which learning rates, what changes each epoch and at save.

One `Strategy` subclass per strategy; the registry in this module is the only list of strategy names.
Layer-wise learning-rate decay (`layer_decay`) is an option every strategy's optimizer groups honour.
A strategy added with `@register_strategy` (from any package) is usable as `strategy: <name>`:

    @hubtl.strategies.register_strategy
    class HeadThenTop(hubtl.strategies.Strategy):
        name = "head_then_top"
        description = "The head and the last layer group were trained."
        def prepare(self, model, config):
            model.backbone.requires_grad_(False)
            for p in model.backbone.layer_groups()[-1]:
                p.requires_grad_(True)
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from torch import nn

from .errors import ConfigError, PluginUnavailableError

if TYPE_CHECKING:  # annotations only: the model imports nothing from here
    from .config import TrainingConfig
    from .data import TransferData
    from .model import TransferModel
    from .objectives import Objective

S = TypeVar("S", bound=type["Strategy"])


class Strategy:
    """How one fine-tuning run treats the model; subclasses override what differs."""

    #: the config value (`strategy: ...`)
    name: ClassVar[str] = ""
    #: one sentence for the model card: what was trained
    description: ClassVar[str] = ""
    #: TrainingConfig keys only this strategy reads (cards leave them out for other strategies)
    config_keys: ClassVar[tuple[str, ...]] = ()
    #: True when backbone weights never train: BatchNorm statistics stay frozen and features can be cached
    freezes_backbone: ClassVar[bool] = False
    #: True when the strategy trains on examples without labels (`dataset.unlabeled_split` / `unlabeled_files`)
    reads_unlabeled: ClassVar[bool] = False
    #: why the strategy cannot run on a sharded model (FSDP), and what to do instead; None when it can
    fsdp_refusal: ClassVar[str | None] = None

    def check(self, config: TrainingConfig) -> None:
        """Refuse config values this strategy cannot use (raise ConfigError)."""

    def prepare(self, model: TransferModel, config: TrainingConfig) -> None:
        """Set which parameters train (requires_grad), or wrap modules (adapters), before the optimizer exists."""
        model.requires_grad_(True)

    def param_groups(self, model: TransferModel, config: TrainingConfig) -> list[dict[str, Any]]:
        """Optimizer groups: head at `head_learning_rate`, backbone groups at lr * layer_decay^(depth from the top)."""
        head_lr = config.head_learning_rate or config.learning_rate
        groups = _groups(list(model.head.parameters()), head_lr, config.weight_decay, "head")
        backbone_groups = model.backbone.layer_groups()
        n = len(backbone_groups)
        for i, params in enumerate(backbone_groups):
            lr = config.learning_rate * (config.layer_decay ** (n - i) if config.layer_decay else 1.0)
            groups += _groups([p for p in params if p.requires_grad], lr, config.weight_decay, f"backbone.{i}")
        return [g for g in groups if g["params"]]

    def frozen_parameters(self, model: TransferModel, epoch: int, config: TrainingConfig) -> list[nn.Parameter]:
        """Trainable parameters whose updates are dropped during `epoch` (0-based): none by default."""
        return []

    def held_count(self, model: TransferModel, epoch: int, config: TrainingConfig) -> int:
        """How many trainable parameter values `frozen_parameters` holds back during `epoch` (0-based)."""
        return sum(p.numel() for p in self.frozen_parameters(model, epoch, config) if p.requires_grad)

    def epoch_note(self, model: TransferModel, epoch: int, config: TrainingConfig) -> str | None:
        """What the strategy does differently in `epoch` (0-based), for the log; None when nothing changes."""
        return None

    def before_save(self, model: TransferModel) -> None:
        """Put the model in its plain, loadable form before it is saved (e.g. merge adapters)."""

    def objective(self, model: TransferModel, data: TransferData, config: TrainingConfig, accelerator: Any) -> Objective | None:
        """The run's training objective (`hubtl.objectives.Objective`) when it is not the task's loss on the labels; None by default.

        Called once per process after `prepare`, before the optimizer and the DataLoaders exist (so it may change weights).
        """
        return None


def _groups(params: list[nn.Parameter], lr: float, weight_decay: float, name: str) -> list[dict[str, Any]]:
    """Optimizer groups at one learning rate; biases and norm weights (1-D) get no weight decay, as in timm."""
    return [
        {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": weight_decay, "name": name},
        {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0, "name": f"{name}.no_decay"},
    ]


class LinearProbe(Strategy):
    """Backbone frozen (BatchNorm statistics included); only the head trains."""

    name = "linear_probe"
    description = "Linear probe: the backbone was frozen (BatchNorm statistics included) and only the task head was trained."
    freezes_backbone = True

    def prepare(self, model: TransferModel, config: TrainingConfig) -> None:
        model.requires_grad_(True)
        model.backbone.requires_grad_(False)


class Full(Strategy):
    """Every parameter trains."""

    name = "full"
    description = "Full fine-tuning: every parameter, backbone and head, was trained."


class Gradual(Strategy):
    """The head first, then the backbone's layer groups unfrozen one by one from the top."""

    name = "gradual"
    description = (
        "Gradual unfreezing: the head was trained first, then the backbone's layer groups were unfrozen one by one "
        "from the top on a schedule. Frozen groups ran in training mode, so their normalisation statistics "
        "(BatchNorm's running means and variances) followed the training data from the start, as in fastai."
    )
    config_keys = ("gradual_unfreeze_epochs",)

    def check(self, config: TrainingConfig) -> None:
        if config.gradual_unfreeze_epochs < 1:
            raise ConfigError("gradual_unfreeze_epochs must be >= 1.")

    def frozen_parameters(self, model: TransferModel, epoch: int, config: TrainingConfig) -> list[nn.Parameter]:
        """One more group from the top thaws every `gradual_unfreeze_epochs` epochs."""
        groups = model.backbone.layer_groups()
        unfrozen = min(len(groups), epoch // config.gradual_unfreeze_epochs)
        return [p for group in groups[: len(groups) - unfrozen] for p in group]

    def epoch_note(self, model: TransferModel, epoch: int, config: TrainingConfig) -> str | None:
        groups = len(model.backbone.layer_groups())
        return f"{min(groups, epoch // config.gradual_unfreeze_epochs)} of {groups} backbone groups unfrozen"


class LoRA(Strategy):
    """Low-rank adapters (PEFT) on the backbone's encoder; the encoder's weights stay frozen; merged at save."""

    name = "lora"
    description = "LoRA: the backbone's weights stayed frozen while low-rank adapters (through PEFT) were trained with the head."
    config_keys = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
    fsdp_refusal = (
        "the adapters are merged into the encoder when saving. LoRA trains few parameters: launch without "
        "--use_fsdp (data parallel) instead"
    )

    def check(self, config: TrainingConfig) -> None:
        if config.lora_r < 1:
            raise ConfigError("lora_r must be >= 1.")

    def prepare(self, model: TransferModel, config: TrainingConfig) -> None:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise PluginUnavailableError("strategy: lora needs PEFT: `pip install 'hubtl[lora]'` (or `pip install peft`).") from err
        model.requires_grad_(True)
        model.backbone.requires_grad_(False)  # PEFT then trains only the adapters: parts outside lora_module stay frozen too
        attribute = model.backbone.lora_module
        encoder = getattr(model.backbone, attribute, None) if attribute else None
        if encoder is None:
            raise ConfigError(
                f"strategy: lora needs a backbone that supports LoRA; {type(model.backbone).__name__} does not "
                "(its `lora_module` is unset). Use full or gradual, or a transformers backbone."
            )
        targets = config.lora_target_modules or model.backbone.lora_target_modules
        lora = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=list(targets) if targets else None,
        )  # fmt: skip
        try:
            setattr(model.backbone, attribute, get_peft_model(encoder, lora))
        except ValueError as err:
            names = _linear_names(encoder)
            raise ConfigError(
                f"PEFT cannot find LoRA target modules in {type(encoder).__name__} ({err}). Set lora_target_modules "
                f"to names of its linear layers: {', '.join(names) or 'none found'} (attention's query and value "
                "projections are the usual choice)."
            ) from err

    def before_save(self, model: TransferModel) -> None:
        """Fold the adapters into the encoder weights, so the saved model loads without PEFT."""
        attribute = model.backbone.lora_module
        encoder = getattr(model.backbone, attribute, None) if attribute else None
        if hasattr(encoder, "merge_and_unload"):
            setattr(model.backbone, attribute, encoder.merge_and_unload())


def _linear_names(module: nn.Module) -> list[str]:
    """The last name parts of a module's linear layers, in order, once each: what `lora_target_modules` can name."""
    names = [name.rsplit(".", 1)[-1] for name, child in module.named_modules() if isinstance(child, nn.Linear) and name]
    return list(dict.fromkeys(names))


class Distill(Strategy):
    """Knowledge distillation: the student (every parameter) learns the labels and a fine-tuned teacher's outputs."""

    name = "distill"
    description = (
        "Knowledge distillation: every parameter of the student was trained on a mix of the task's loss on the labels "
        "and a loss towards the outputs of a fine-tuned teacher model."
    )
    config_keys = ("teacher", "distill_alpha", "distill_temperature", "init_from_teacher")
    reads_unlabeled = True

    def check(self, config: TrainingConfig) -> None:
        if not config.teacher:
            raise ConfigError("strategy: distill needs `teacher`: the folder or Hub ID of a fine-tuned hubtl model.")
        if not 0.0 <= config.distill_alpha <= 1.0:
            raise ConfigError(f"distill_alpha must be in [0, 1]; got {config.distill_alpha}.")
        if config.distill_temperature <= 0:
            raise ConfigError(f"distill_temperature must be > 0; got {config.distill_temperature}.")
        from .distillation import check_layer_choice  # no heavy import: torch only

        check_layer_choice(config.init_from_teacher)

    def objective(self, model: TransferModel, data: TransferData, config: TrainingConfig, accelerator: Any) -> Objective:
        """Load the teacher, build the student from its layers when asked, and compute the teacher's outputs."""
        from .distillation import Distillation

        return Distillation(model, data, config, accelerator)


# The registry's only global state: strategies by name.
_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: S) -> S:
    """Class decorator adding a strategy under its `name` (timm-style); a later registration replaces an earlier one."""
    instance = strategy() if isinstance(strategy, type) else strategy
    if not isinstance(instance, Strategy) or not instance.name:
        raise ConfigError(f"{strategy!r} is not a hubtl.strategies.Strategy subclass with a `name`; it cannot be registered.")
    _STRATEGIES[instance.name] = instance
    return strategy


def get_strategy(name: str) -> Strategy:
    """The registered strategy called `name`, or a ConfigError listing the known ones."""
    if name not in _STRATEGIES:
        close = difflib.get_close_matches(str(name), list(_STRATEGIES), n=1)
        hint = (f" Did you mean {close[0]!r}?" if close else "") + (
            " A strategy of your own is registered (hubtl.register_strategy) by its module: import it first, or pass "
            "--import MODULE to the hubtl command."
        )
        raise ConfigError(f"Unknown strategy {name!r}: strategy must be one of {', '.join(_STRATEGIES)}.{hint}")
    return _STRATEGIES[name]


def list_strategies() -> list[str]:
    """Names of the registered strategies, built-in first."""
    return list(_STRATEGIES)


def strategy_config_keys() -> set[str]:
    """Config keys that belong to one strategy or another (cards show only the chosen strategy's)."""
    return {key for s in _STRATEGIES.values() for key in s.config_keys}


for _builtin in (LinearProbe, Full, Gradual, LoRA, Distill):
    register_strategy(_builtin)
