"""hubtl backbone plugin: sentence-transformers encoders (Transformer -> Pooling -> Normalize) built with transformers alone."""

from .folder import SentenceTransformerConfig, read_folder, resolve_folder, write_folder
from .plugin import SentenceTransformerBackbone, SentenceTransformersPlugin, TextPreprocessor
from .pooling import POOLING_MODES, Pooling

__version__ = "0.1.0"

__all__ = [
    "POOLING_MODES",
    "Pooling",
    "SentenceTransformerBackbone",
    "SentenceTransformerConfig",
    "SentenceTransformersPlugin",
    "TextPreprocessor",
    "__version__",
    "read_folder",
    "resolve_folder",
    "write_folder",
]
