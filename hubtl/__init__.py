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
    HubError,
    HubtlError,
    InvalidInputError,
    ModelLoadError,
    PluginUnavailableError,
)
from .heads import Head, HeadConfig  # noqa: E402
from .images import load_image  # noqa: E402
from .model import TransferModel  # noqa: E402

__all__ = [
    "Backbone",
    "BackboneNotFoundError",
    "BackbonePlugin",
    "ConfigError",
    "ConfigFileError",
    "DataError",
    "Head",
    "HeadConfig",
    "HubError",
    "HubtlError",
    "InvalidInputError",
    "ModelLoadError",
    "PluginInfo",
    "PluginUnavailableError",
    "Preprocessor",
    "TransferModel",
    "__version__",
    "ImagePreprocessor",
    "TextPreprocessor",
    "create_backbone",
    "check_transformers_files",
    "encoder_layer_groups",
    "get_plugin",
    "list_backbones",
    "list_plugins",
    "load_image",
    "register_plugin",
]


def __getattr__(name: str) -> object:
    """Import the built-in preprocessors and encoder grouping on first use, so text-only users never import timm."""
    if name == "ImagePreprocessor":
        from .backbones.timm import ImagePreprocessor

        return ImagePreprocessor
    if name == "TextPreprocessor":
        from .backbones.transformers import TextPreprocessor

        return TextPreprocessor
    if name == "check_transformers_files":
        from .backbones.transformers import check_transformers_files

        return check_transformers_files
    if name == "encoder_layer_groups":
        from .backbones.transformers import encoder_layer_groups

        return encoder_layer_groups
    raise AttributeError(f"module 'hubtl' has no attribute {name!r}")
