"""Self-supervised objectives: what a pre-training run adds to a backbone (a head) and the loss it trains.

One `Objective` subclass per objective, named by the config's `objective:` value:

- `mlm`: masked language modelling for transformers encoders, with transformers' own data collator and the
  architecture's MLM head (initialised from the checkpoint's when it has one);
- `masked_autoencoder`: SimMIM-style masked image modelling for any backbone with a feature map: random square
  patches of the input replaced by a learned value, a light decoder (1x1 convolution and pixel shuffle) and an
  L1 loss on the masked pixels;
- `denoising_autoencoder`: Gaussian noise on the input, the pooled features decoded back to the clean image
  (L1 on every pixel): for backbones that give pooled features only.

Losses are computed per example (`example_losses`: a loss sum and a count per example), so an evaluation
gathered over processes is exact.
"""

from __future__ import annotations

import abc
import difflib
import hashlib
import inspect
import logging
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..backbones.base import Backbone
from ..errors import ConfigError

logger = logging.getLogger("hubtl")


class Objective(abc.ABC):
    """A self-supervised objective: checks the backbone, builds its head, computes per-example losses."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    #: one sentence for the card: what the objective trains the backbone to do
    description: ClassVar[str] = ""
    #: what eval_loss measures, for the card
    loss_name: ClassVar[str] = ""

    def check(self, backbone: Backbone, backbone_name: str) -> None:
        """Refuse a backbone this objective cannot train (a ConfigError naming the objective to use instead)."""
        if backbone.modality != self.modality:
            others = ", ".join(o.name for o in OBJECTIVES.values() if o.modality == backbone.modality) or "none"
            raise ConfigError(
                f"objective: {self.name} trains {self.modality} backbones; {backbone_name} is a {backbone.modality} "
                f"backbone. Objectives for {backbone.modality} backbones: {others}."
            )

    @abc.abstractmethod
    def build_head(self, backbone: Backbone, cfg: Any) -> nn.Module:
        """The objective's own trainable part (MLM head, pixel decoder), dropped when the backbone is saved."""

    @abc.abstractmethod
    def example_losses(
        self, model: PretrainingModel, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sum, count) per example; `generator` draws the random masks or noise (None: the global RNG).

        Evaluation passes a seeded generator: draw each example's masks from its own seed then (`example_seeds`), so
        they do not depend on the batch or the process the example falls in."""

    def record(self, cfg: Any) -> dict[str, Any]:
        """The objective's settings as the card and the saved backbone record them."""
        return {"objective": self.name}


class PretrainingModel(nn.Module):
    """A backbone and an objective's head: `forward(batch)` is the mean loss of the batch."""

    def __init__(self, backbone: Backbone, head: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's loss (what the trainer back-propagates)."""
        sums, counts = self.objective.example_losses(self, batch)
        return sums.sum() / counts.sum().clamp(min=1)

    def example_losses(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example loss sums and counts (evaluation gathers these over processes)."""
        return self.objective.example_losses(self, batch, generator)

    def preprocessor(self, train: bool = False) -> Any:
        """The backbone's preprocessor."""
        return self.backbone.preprocessor(train=train)


# --------------------------------------------------------------------------- text


class MaskedLanguageModeling(Objective):
    """Masked language modelling (BERT's): predict the masked tokens, with the architecture's own MLM head."""

    name = "mlm"
    modality = "text"
    description = "masked language modelling: a fraction of the tokens is masked and predicted from the rest"
    loss_name = "cross-entropy of the masked tokens"

    def check(self, backbone: Backbone, backbone_name: str) -> None:
        """MLM needs a transformers encoder and its tokenizer (the backbone's `export_source('transformers')`)."""
        source = backbone.export_source("transformers") if backbone.modality == "text" else {}
        if not source.get("model") or not source.get("tokenizer"):
            hint = (
                "For image backbones use objective: masked_autoencoder (backbones with a feature map) or "
                "denoising_autoencoder."
                if backbone.modality == "image"
                else "Use a transformers encoder, e.g. backbone: transformers:sentence-transformers/all-MiniLM-L6-v2."
            )
            raise ConfigError(
                f"objective: mlm needs a Hugging Face transformers encoder with its tokenizer (a backbone whose "
                f"export_source('transformers') gives them); {backbone_name} ({type(backbone).__name__}) has none. {hint}"
            )
        if getattr(source["tokenizer"], "mask_token", None) is None:
            raise ConfigError(f"objective: mlm needs a tokenizer with a mask token; the one of {backbone_name} has none.")

    def build_head(self, backbone: Backbone, cfg: Any) -> nn.Module:
        """The architecture's MLM head around the backbone's encoder, with the checkpoint's head weights when present."""
        from transformers import AutoModelForMaskedLM

        encoder = backbone.export_source("transformers")["model"]
        try:
            mlm = AutoModelForMaskedLM.from_config(encoder.config)
        except ValueError as err:
            raise ConfigError(
                f"objective: mlm: transformers has no masked-LM head for {type(encoder).__name__} "
                f"({encoder.config.model_type}): {err}"
            ) from None
        loaded = _load_checkpoint_head(mlm, encoder, cfg) if cfg.pretrained else False
        logger.info(
            "MLM head: %s.", "the checkpoint's weights" if loaded else "initialised afresh (the checkpoint has none)"
        )
        return MaskedLMHead(mlm, encoder, loaded)

    def example_losses(
        self, model: PretrainingModel, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        rows, cols = (labels != -100).nonzero(as_tuple=True)
        logits = model.head.masked_logits(batch, rows, cols)  # [masked tokens, vocabulary]
        losses = F.cross_entropy(logits.float(), labels[rows, cols], reduction="none")
        sums = torch.zeros(labels.shape[0], dtype=losses.dtype, device=losses.device).index_add(0, rows, losses)
        return sums, torch.bincount(rows, minlength=labels.shape[0]).to(losses.dtype)

    def record(self, cfg: Any) -> dict[str, Any]:
        return {
            "objective": self.name,
            "mlm_probability": cfg.mlm_probability,
            "whole_word_mask": cfg.whole_word_mask,
            "max_seq_length": cfg.max_seq_length,
            "line_by_line": cfg.line_by_line,
        }


class MaskedLMHead(nn.Module):
    """The parts of an `AutoModelForMaskedLM` other than its encoder; the encoder is the backbone's own module.

    The output embeddings stay tied to the encoder's input embeddings (as the architecture defines), so that
    weight is the backbone's parameter and is not listed among this head's own.
    """

    def __init__(self, mlm: nn.Module, encoder: nn.Module, from_checkpoint: bool) -> None:
        super().__init__()
        prefix = mlm.base_model_prefix
        mlm._modules[prefix] = encoder  # the backbone's encoder, not a copy
        if hasattr(mlm, "tie_weights"):
            mlm.tie_weights()
        shared = {id(p) for p in encoder.parameters()}
        self.parts = nn.ModuleDict({name: child for name, child in mlm.named_children() if name != prefix})
        self.shared = [p for p in self.parts.parameters() if id(p) in shared]
        self._mlm = [mlm]  # a list: not registered twice (the encoder is the backbone's, the rest is `parts`)
        self.from_checkpoint = from_checkpoint
        self._inputs = set(inspect.signature(mlm.forward).parameters)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token logits [batch, length, vocabulary]."""
        inputs = {k: v for k, v in batch.items() if k in self._inputs and k != "labels"}
        return self._mlm[0](**inputs).logits

    def masked_logits(self, batch: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Logits [N, vocabulary] of the tokens at (rows, cols) only: the vocabulary projection of the masked tokens,
        not of every token (most of an MLM step's cost otherwise), where the architecture's head is known."""
        mlm = self._mlm[0]
        predict = getattr(mlm, "cls", None) or getattr(mlm, "lm_head", None)  # BERT-like / RoBERTa-like heads
        if predict is None:
            return self(batch)[rows, cols]
        encoder = mlm._modules[mlm.base_model_prefix]
        accepted = set(inspect.signature(encoder.forward).parameters)
        hidden = encoder(**{k: v for k, v in batch.items() if k in accepted and k != "labels"})[0]
        return predict(hidden[rows, cols])


def _load_checkpoint_head(mlm: nn.Module, encoder: nn.Module, cfg: Any) -> bool:
    """Load the MLM head weights of the encoder's checkpoint (local folder or HF cache) when it has them; True if so."""
    from transformers import AutoModelForMaskedLM

    source = getattr(encoder.config, "_name_or_path", None) or getattr(encoder, "name_or_path", None)
    if not source:
        return False
    try:
        checkpoint, info = AutoModelForMaskedLM.from_pretrained(
            source, local_files_only=True, output_loading_info=True, trust_remote_code=False
        )
    except Exception as err:  # noqa: BLE001 - no checkpoint in reach: a fresh head
        logger.debug("No MLM head loaded from %s: %s", source, err)
        return False
    prefix = mlm.base_model_prefix
    head_missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    if head_missing:
        return False
    state = {k: v for k, v in checkpoint.state_dict().items() if not k.startswith(prefix + ".")}
    mlm.load_state_dict(state, strict=False)
    return True


# --------------------------------------------------------------------------- images


def image_shape(backbone: Backbone) -> tuple[int, int, int]:
    """(channels, height, width) of the pixel values the backbone's evaluation preprocessor makes."""
    from PIL import Image

    pixels = backbone.preprocessor(train=False)([Image.new("RGB", (256, 256), (127, 127, 127))])["pixel_values"]
    return tuple(pixels.shape[1:])  # type: ignore[return-value]


class MaskedAutoencoder(Objective):
    """SimMIM-style masked image modelling on any backbone with a feature map."""

    name = "masked_autoencoder"
    modality = "image"
    description = (
        "masked image modelling (SimMIM-style): random square patches of each image are replaced by a learned value "
        "and a light decoder (1x1 convolution, pixel shuffle) predicts their pixels from the backbone's feature map"
    )
    loss_name = "L1 error of the masked pixels (normalised pixel values)"

    def check(self, backbone: Backbone, backbone_name: str) -> None:
        """Needs an image backbone that declares a feature map."""
        super().check(backbone, backbone_name)
        if not backbone.has_feature_map:
            raise ConfigError(
                f"objective: masked_autoencoder needs a backbone with a feature map (has_feature_map and "
                f"forward_feature_map); {backbone_name} ({type(backbone).__name__}) gives pooled features only. "
                "Use objective: denoising_autoencoder, which needs pooled features only."
            )

    def build_head(self, backbone: Backbone, cfg: Any) -> nn.Module:
        channels, height, width = image_shape(backbone)
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            features = backbone.forward_feature_map({"pixel_values": torch.zeros(1, channels, height, width)})
        backbone.train(was_training)
        if features.ndim != 4:
            raise ConfigError(f"{type(backbone).__name__}.forward_feature_map gave shape {tuple(features.shape)}, not [B, C, H, W].")
        stride = height // features.shape[2]
        if stride < 1 or features.shape[2] * stride != height or features.shape[3] * stride != width:
            raise ConfigError(
                f"The feature map ({features.shape[2]}x{features.shape[3]}) does not divide the {height}x{width} input "
                "evenly; choose an image size that is a multiple of the backbone's stride (backbone_kwargs: {image_size: N})."
            )
        patch = cfg.mask_patch_size
        if height % patch or width % patch:
            raise ConfigError(
                f"mask_patch_size {patch} does not divide the {height}x{width} input; choose a divisor, e.g. {stride}."
            )
        if (height // patch) * (width // patch) < 2:  # one patch: every image masked everywhere, nothing left to see
            raise ConfigError(
                f"mask_patch_size {patch} leaves a single patch in the {height}x{width} input, so every image would be "
                f"masked everywhere; choose a smaller mask_patch_size that divides it, e.g. {_half_divisor(height, width, patch)}."
            )
        decoder = PixelDecoder(features.shape[1], stride, channels)
        decoder.mask_patch_size, decoder.mask_ratio = patch, cfg.mask_ratio
        return decoder

    def example_losses(
        self, model: PretrainingModel, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = batch["pixel_values"]
        cfg_patch, ratio = model.head.mask_patch_size, model.head.mask_ratio
        mask = patch_mask(pixels.shape[0], pixels.shape[2], pixels.shape[3], cfg_patch, ratio, example_seeds(pixels, generator))
        mask = mask.to(pixels)
        masked = pixels * (1 - mask) + model.head.mask_value.to(pixels.dtype) * mask
        reconstruction = model.head(model.backbone.forward_feature_map({**batch, "pixel_values": masked}))
        error = (reconstruction.float() - pixels.float()).abs() * mask
        return error.sum((1, 2, 3)), mask.sum((1, 2, 3)) * pixels.shape[1]

    def record(self, cfg: Any) -> dict[str, Any]:
        return {"objective": self.name, "mask_ratio": cfg.mask_ratio, "mask_patch_size": cfg.mask_patch_size}


def _half_divisor(height: int, width: int, patch: int) -> int:
    """The largest divisor of both sides below `patch` (for the error's suggestion)."""
    return next(d for d in range(min(patch, height, width) - 1, 0, -1) if height % d == 0 and width % d == 0)


class PixelDecoder(nn.Module):
    """SimMIM's light decoder: a 1x1 convolution to stride² x channels values, then a pixel shuffle."""

    def __init__(self, in_channels: int, stride: int, out_channels: int = 3) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_channels, stride * stride * out_channels, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)
        #: the value masked pixels take (per channel, in normalised pixel space), learned
        self.mask_value = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.mask_patch_size, self.mask_ratio = 32, 0.6

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pixels [batch, channels, height, width] from a feature map."""
        return self.shuffle(self.project(features))


def example_seeds(pixels: torch.Tensor, generator: torch.Generator | None) -> list[int] | None:
    """One seed per image, from the generator's seed and the image's pixels (evaluation); None (training): the global
    RNG. An image then gets the same mask or noise whatever batch or process it is evaluated in."""
    if generator is None:
        return None
    key = str(generator.initial_seed()).encode()
    return [
        int.from_bytes(hashlib.blake2b(image.detach().float().cpu().numpy().tobytes(), digest_size=8, key=key).digest(), "little") >> 1
        for image in pixels
    ]  # fmt: skip


def _per_example(seeds: list[int] | None, draw: Any, batch: int, *shape: int) -> torch.Tensor:
    """`draw(size, generator=...)` (torch.rand, torch.randn) for a batch: from the global RNG, or one seed per example."""
    if seeds is None:
        return draw(batch, *shape)
    return torch.stack([draw(*shape, generator=torch.Generator().manual_seed(seed)) for seed in seeds])


def patch_mask(
    batch: int, height: int, width: int, patch: int, ratio: float, seeds: list[int] | None = None
) -> torch.Tensor:
    """A [batch, 1, height, width] mask of 0/1 with round(ratio x patches) random square patches set per image
    (`seeds`: one per image; None: the global RNG)."""
    rows, cols = height // patch, width // patch
    count = max(1, min(rows * cols - 1, round(ratio * rows * cols))) if rows * cols > 1 else 1
    order = _per_example(seeds, torch.rand, batch, rows * cols).argsort(1)
    mask = torch.zeros(batch, rows * cols)
    mask.scatter_(1, order[:, :count], 1.0)
    mask = mask.view(batch, 1, rows, cols)
    return mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


class DenoisingAutoencoder(Objective):
    """Denoising auto-encoder on pooled features: for backbones without a feature map."""

    name = "denoising_autoencoder"
    modality = "image"
    description = (
        "denoising auto-encoding: Gaussian noise is added to each image and a light decoder reconstructs the clean "
        "image from the backbone's pooled features"
    )
    loss_name = "L1 error of the reconstructed pixels (normalised pixel values)"
    #: side of the decoder's output grid, upsampled to the image size
    GRID = 16

    def build_head(self, backbone: Backbone, cfg: Any) -> nn.Module:
        channels, _, _ = image_shape(backbone)
        decoder = PooledDecoder(backbone.feature_dim, channels, self.GRID)
        decoder.noise_std = cfg.noise_std
        return decoder

    def example_losses(
        self, model: PretrainingModel, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = batch["pixel_values"]
        noise = _per_example(example_seeds(pixels, generator), torch.randn, *pixels.shape).to(pixels) * model.head.noise_std
        reconstruction = model.head(model.backbone({**batch, "pixel_values": pixels + noise}), pixels.shape[2:])
        error = (reconstruction.float() - pixels.float()).abs()
        return error.sum((1, 2, 3)), torch.full((pixels.shape[0],), float(pixels[0].numel()), device=pixels.device)

    def record(self, cfg: Any) -> dict[str, Any]:
        return {"objective": self.name, "noise_std": cfg.noise_std}


class PooledDecoder(nn.Module):
    """Pooled features to a coarse image (a linear layer), upsampled bilinearly to the input size."""

    def __init__(self, feature_dim: int, channels: int, grid: int) -> None:
        super().__init__()
        self.channels, self.grid = channels, grid
        self.project = nn.Sequential(nn.Linear(feature_dim, 4 * feature_dim), nn.GELU(), nn.Linear(4 * feature_dim, channels * grid * grid))
        self.noise_std = 0.5

    def forward(self, features: torch.Tensor, size: Any) -> torch.Tensor:
        """Pixels [batch, channels, *size]."""
        coarse = self.project(features).view(-1, self.channels, self.grid, self.grid)
        return F.interpolate(coarse, size=tuple(size), mode="bilinear", align_corners=False)


#: The objectives by config name.
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (MaskedLanguageModeling(), MaskedAutoencoder(), DenoisingAutoencoder())}
#: The objective used when the config names none, by modality.
DEFAULT_OBJECTIVE = {"text": "mlm", "image": "masked_autoencoder"}


def get_objective(name: str) -> Objective:
    """The objective called `name`, or a ConfigError listing the known ones."""
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), list(OBJECTIVES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown objective {name!r}: objective must be one of {', '.join(OBJECTIVES)}.{hint}")
    return OBJECTIVES[name]
