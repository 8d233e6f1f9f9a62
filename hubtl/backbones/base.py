"""The transfer interface: what every backbone plugin implements (docs/writing-plugins.md is the guide)."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError, PluginError

MODALITIES = ("image", "text")


class Preprocessor(abc.ABC):
    """Turns a list of raw examples into the batch dict a backbone's `forward` takes.

    It is also a DataLoader `collate_fn`-friendly callable, so decoding and transforms run in the
    DataLoader workers. `deterministic` says whether two calls on the same input give the same batch
    (true for eval transforms and tokenizers, false for random augmentation): the feature cache uses it.
    It has no default: every preprocessor sets it (class attribute or in `__init__`), and reading it
    when unset raises a `PluginError` saying so; the conformance kit checks the claim.
    """

    #: required: True when two calls on the same input give the same batch whatever the random seeds
    deterministic: bool

    def __getattr__(self, name: str) -> Any:
        """Called only for attributes not set: an unset `deterministic` is the plugin's bug, said clearly."""
        if name == "deterministic":
            raise PluginError(
                f"{type(self).__name__} does not say whether it is deterministic. Set `deterministic = True` (the same "
                "input always gives the same batch: eval transforms, tokenizers) or `False` (random augmentation), as a "
                "class attribute or in __init__; hubtl caches features only for deterministic preprocessing."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @abc.abstractmethod
    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Preprocess raw examples (PIL images or paths; strings) into one batch."""

    def config(self) -> dict[str, Any]:
        """JSON-able preprocessing parameters, recorded in the saved model's config.json."""
        return {}

    def input_length(self, example: Any) -> int | None:
        """A cheap size estimate of one raw example (a text's characters), or None when all cost alike (images).

        Inference over many examples (the feature pass, `predict`) batches examples of similar size together, so a
        preprocessor that pads to the longest of a batch pads little.
        """
        return None

    def save_files(self, directory: Path) -> None:
        """Write the files a consumer without hubtl needs to preprocess (a tokenizer's); none by default (exports use it)."""


def length_order(preprocess: Preprocessor, examples: Sequence[Any]) -> list[int] | None:
    """Positions of `examples`, longest first by `preprocess.input_length`; None when it gives no lengths."""
    if not examples or preprocess.input_length(examples[0]) is None:
        return None
    lengths = [preprocess.input_length(x) or 0 for x in examples]
    return sorted(range(len(examples)), key=lambda i: -lengths[i])


def in_given_order(outputs: torch.Tensor, order: list[int] | None) -> torch.Tensor:
    """Rows computed in `order` (from `length_order`), put back in the order the examples were given."""
    if order is None:
        return outputs
    restored = torch.empty_like(outputs)
    restored[torch.tensor(order)] = outputs
    return restored


@contextlib.contextmanager
def inference_layout(module: nn.Module, device: Any) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Run a convolutional module's inference in channels_last, where its convolutions are faster; yields what to
    apply to each input tensor (4-d image batches go channels_last, others pass unchanged).

    On the CPU only the inputs change (oneDNN then runs every convolution in that layout: one forward pass of 64
    images at 224 px took 1.59 s instead of 3.27 s for EfficientNet-Lite0 here). On CUDA the weights go
    channels_last too (cuDNN would otherwise convert them at every call) and are restored after, as normal
    tensors even under `inference_mode`, so the module can still be trained.
    """
    kind = getattr(device, "type", None)
    if kind not in ("cuda", "cpu") or not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        yield lambda tensor: tensor
        return
    to_layout = lambda tensor: tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor
    if kind == "cpu":
        yield to_layout
        return
    with torch.inference_mode(False):
        module.to(memory_format=torch.channels_last)
    try:
        yield to_layout
    finally:
        with torch.inference_mode(False):
            module.to(memory_format=torch.contiguous_format)


class Backbone(nn.Module, abc.ABC):
    """A pretrained network that maps a preprocessed batch to one pooled feature vector per example."""

    modality: str = "image"
    feature_dim: int = 0
    #: attribute name of the submodule PEFT can wrap with LoRA adapters (a transformers model); None: no LoRA
    lora_module: str | None = None
    #: module names LoRA adapts when the config sets no `lora_target_modules`; None: PEFT's choice for the model type
    lora_target_modules: tuple[str, ...] | None = None
    #: Hub ID of the pretrained weights (published as the card's base_model instead of a local path); None: unknown
    base_model: str | None = None
    #: formats `hubtl.export` writes for models on this backbone, checked by the conformance kit: "onnx" (traceable),
    #: "timm", "transformers" (each also needs `export_source`); ONNX export is still tried when undeclared
    export_formats: tuple[str, ...] = ()
    #: True when `forward_feature_map` returns a spatial feature map: what `hubtl pretrain`'s
    #: `objective: masked_autoencoder` needs (checked by the conformance kit when declared)
    has_feature_map: bool = False

    @abc.abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return pooled features of shape [batch, feature_dim]."""

    @abc.abstractmethod
    def preprocessor(self, train: bool = False) -> Preprocessor:
        """Return the preprocessor for training (augmenting) or evaluation (deterministic)."""

    @abc.abstractmethod
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped from input to output; every parameter in exactly one group."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able recipe that rebuilds this architecture offline: {"plugin", "name", "kwargs", ...}."""

    def forward_feature_map(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the last spatial feature map [batch, channels, height / stride, width / stride] (with `has_feature_map`)."""
        raise PluginError(
            f"{type(self).__name__} exposes no feature map (has_feature_map is false): objective masked_autoencoder "
            "cannot use it. Use objective: denoising_autoencoder, which needs pooled features only."
        )

    def save_files(self, directory: Path) -> None:
        """Write the files `from_spec` needs beside the weights (tokenizer, configs); none by default."""

    def export_source(self, format: str) -> dict[str, Any]:
        """The library-native parts the `format` exporter rebuilds from (docs/writing-plugins.md, "Exporting"); none by default."""
        return {}

    def transfer_layers(self) -> tuple[nn.Module, nn.ModuleList]:
        """(embeddings, list of layers from input to output) that `init_from_teacher` copies between two of these backbones.

        Raise a ConfigError that says why when the architecture has no standard layer list (the default).
        """
        raise ConfigError(
            f"init_from_teacher needs a backbone that exposes its embeddings and its list of layers; {type(self).__name__} "
            "does not (its plugin does not implement `transfer_layers`). Leave init_from_teacher unset to distill into "
            "the student as it is created."
        )


class BackbonePlugin(abc.ABC):
    """Adapts one family of models (timm, transformers, ...) to the transfer interface."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    #: pip package that provides the plugin, named in "plugin not installed" errors
    package: ClassVar[str] = ""
    #: version of the spec format this plugin writes; `from_spec` must read every version up to it
    spec_version: ClassVar[int] = 1
    #: the `spec()["kwargs"]` keys `from_spec` accepts from a saved config.json (None: any key that names no file,
    #: path or URL); a model loaded by Hub ID is a stranger's, so keys that open files are refused either way
    spec_kwargs: ClassVar[frozenset[str] | None] = None

    @abc.abstractmethod
    def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
        """Build a backbone, with pretrained weights when `pretrained` is true."""

    @abc.abstractmethod
    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> Backbone:
        """Rebuild the architecture of `spec` without downloading weights."""

    def modality_of(self, model_name: str) -> str:
        """The modality of the backbone `model_name` (a plugin that serves several modalities reads it per model)."""
        return self.modality

    def check_name(self, model_name: str) -> None:
        """Raise BackboneNotFoundError when `model_name` surely cannot be created (cheap: no download, no build).

        Called before a training run reads any data; the default accepts every name (create() decides)."""

    @abc.abstractmethod
    def list_models(self, pattern: str | None = None) -> list[str]:
        """Model names this plugin can create, filtered by a shell-style `pattern`."""
