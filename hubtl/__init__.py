"""hubtl: adapt pretrained timm and transformers backbones, fine-tune with Accelerate, share on the Hub."""

from .version import __version__
from .backbones import (  # noqa: E402
    Backbone,
    BackbonePlugin,
    PluginInfo,
    Preprocessor,
    create_backbone,
    get_plugin,
    list_backbones,
    list_plugins,
    register_plugin,
)
from .errors import (  # noqa: E402
    BackboneNotFoundError,
    ConfigError,
    ConfigFileError,
    DataError,
    ExportError,
    HubError,
    HubtlError,
    InvalidInputError,
    ModelLoadError,
    PluginError,
    PluginUnavailableError,
)
from .heads import Head, HeadConfig  # noqa: E402
from .images import load_image  # noqa: E402
from .model import TransferModel  # noqa: E402
from .objectives import Objective  # noqa: E402
from .strategies import Strategy, get_strategy, list_strategies, register_strategy  # noqa: E402
from .tasks import Task, get_task, list_tasks, register_task  # noqa: E402

#: Public names imported on first use (training pulls in accelerate and datasets; loading a model must not).
_LAZY = {
    "ImagePreprocessor": ".backbones.timm",
    "TextPreprocessor": ".backbones.transformers",
    "check_transformers_files": ".backbones.transformers",
    "encoder_layer_groups": ".backbones.transformers",
    "Trainer": ".training",
    "TrainResult": ".training",
    "TrainingConfig": ".config",
    "load_config": ".config",
    "DatasetConfig": ".data",
    "TransferData": ".data",
    "rank": ".ranking",
    "RankResult": ".ranking",
    "FeatureStore": ".features",
    "Distillation": ".distillation",
    "distillation_loss": ".distillation",
    "init_from_teacher": ".distillation",
    "PretrainingConfig": ".pretraining",
    "PretrainingTrainer": ".pretraining",
    "load_pretraining_config": ".pretraining",
}

__all__ = [
    "Backbone",
    "BackboneNotFoundError",
    "BackbonePlugin",
    "ConfigError",
    "ConfigFileError",
    "DataError",
    "ExportError",
    "Head",
    "HeadConfig",
    "HubError",
    "HubtlError",
    "InvalidInputError",
    "ModelLoadError",
    "Objective",
    "Distillation",
    "distillation_loss",
    "init_from_teacher",
    "PluginError",
    "PluginInfo",
    "PluginUnavailableError",
    "Preprocessor",
    "TransferModel",
    "__version__",
    "PretrainingConfig",
    "PretrainingTrainer",
    "load_pretraining_config",
    "DatasetConfig",
    "ImagePreprocessor",
    "Strategy",
    "Task",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "TransferData",
    "get_strategy",
    "get_task",
    "list_strategies",
    "list_tasks",
    "load_config",
    "register_strategy",
    "register_task",
    "TextPreprocessor",
    "create_backbone",
    "check_transformers_files",
    "encoder_layer_groups",
    "get_plugin",
    "list_backbones",
    "list_plugins",
    "load_image",
    "register_plugin",
    "rank",
    "RankResult",
    "FeatureStore",
]


def __getattr__(name: str) -> object:
    """Import the names in `_LAZY` on first use, so text-only users never import timm and predict never imports datasets."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hubtl' has no attribute {name!r}")
