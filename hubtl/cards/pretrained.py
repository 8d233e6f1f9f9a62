"""The card of a pre-trained backbone folder (`hubtl pretrain`): what it was pre-trained on, how, and the loss curve.

The folder's hubtl_backbone.json and training record are the only sources; the template is
`model_cards/pretrained_backbone.md.j2`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..layout import README_NAME, atomic_write, read_backbone_config, read_training_record
from .formatting import value_text
from .plots import CURVES_PNG, write_plots
from .public import is_hub_dataset, local_name
from .render import GENERATED_MARK, _environment, is_generated_card

TEMPLATE = "pretrained_backbone.md.j2"
#: Config keys the card's hyperparameter table shows, when set.
SHOWN_KEYS = (
    "objective", "mlm_probability", "whole_word_mask", "max_seq_length", "line_by_line", "mask_ratio", "mask_patch_size",
    "noise_std", "learning_rate", "head_learning_rate", "layer_decay", "weight_decay", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps", "augment",
    "mixed_precision", "seed",
)  # fmt: skip
#: Keys of hubtl_backbone.json's `pretraining` that apply to one objective only.
_OBJECTIVE_KEYS = {
    "mlm": ("mlm_probability", "whole_word_mask", "max_seq_length", "line_by_line"),
    "masked_autoencoder": ("mask_ratio", "mask_patch_size"),
    "denoising_autoencoder": ("noise_std",),
}


def build_backbone_card(output_dir: str | os.PathLike, repo_id: str | None = None) -> Any:
    """Render the card of a pre-trained backbone folder (README.md content, not written) as a `ModelCard`."""
    from huggingface_hub import ModelCard, ModelCardData

    directory = Path(output_dir)
    if not directory.is_dir():
        raise ModelLoadError(f"{directory} is not a directory; give the output_dir of a `hubtl pretrain` run.")
    config = read_backbone_config(directory)
    record = read_training_record(directory)
    pretraining = config.get("pretraining") or {}
    objective = str(pretraining.get("objective", "unknown"))
    other_objectives = {k for name, keys in _OBJECTIVE_KEYS.items() if name != objective for k in keys}
    hyper = [
        (k, value_text(record.config[k])) for k in SHOWN_KEYS
        if k in record.config and record.config[k] is not None and k not in other_objectives
        and not (k == "max_steps" and record.config[k] <= 0) and not (k == "augment" and config["modality"] != "image")
        and not (k == "num_train_epochs" and (record.config.get("max_steps") or -1) > 0)
    ]  # fmt: skip
    dataset = str(pretraining.get("dataset") or "unknown")
    # the training config's own path tells a Hub dataset from a local folder (the recorded name is only its last part)
    source = record.config.get("dataset") if isinstance(record.config.get("dataset"), dict) else {}
    hub_dataset = dataset if source.get("path") and is_hub_dataset(str(source["path"]), source) else None
    epochs = [r for r in record.metrics if r.get("kind") == "epoch"]
    summary = record.summary or {}
    name = repo_id.split("/")[-1] if repo_id else directory.resolve().name
    modality = config["modality"]
    weights = config["weights"]
    base_model = pretraining.get("base_model")
    context = {
        "model_name": name,
        "repo_id": repo_id,
        "load_id": repo_id or str(directory.resolve()),
        "local_name": local_name(str(directory.resolve())),
        "modality": modality,
        "spec": config["backbone"],
        "weights": weights,
        "feature_dim": config["feature_dim"],
        "pretraining": pretraining,
        "objective": objective,
        "base_model": base_model,
        "dataset": dataset,
        "hub_dataset": hub_dataset,
        "hyperparameters": hyper,
        "epochs": epochs,
        "runtime": summary.get("runtime_s"),
        "world_size": summary.get("world_size") or pretraining.get("world_size"),
        "versions": sorted((summary.get("versions") or {}).items()),
        "curves": CURVES_PNG if (directory / CURVES_PNG).is_file() else None,
        "mark": GENERATED_MARK,
    }
    tags = ["hubtl", "pretraining", "self-supervised", objective.replace("_", "-"), modality, config["backbone"]["plugin"]]
    metadata = ModelCardData(
        library_name="hubtl",
        tags=list(dict.fromkeys(tags)),
        base_model=base_model or None,
        datasets=[hub_dataset] if hub_dataset else None,
        pipeline_tag="feature-extraction" if modality == "text" else "image-feature-extraction",
        license=record.config.get("license") or None,
    )
    content = _environment().get_template(TEMPLATE).render(card_data=metadata.to_yaml(), **context)
    return ModelCard(content)


def write_backbone_card(output_dir: str | os.PathLike, repo_id: str | None = None, force: bool = False) -> Any:
    """Write the loss-curve plot and README.md of a pre-trained backbone folder; a hand-written README is kept."""
    directory = Path(output_dir)
    write_plots(directory)
    card = build_backbone_card(directory, repo_id=repo_id)
    readme = directory / README_NAME
    if readme.is_file() and not force and not is_generated_card(readme):
        return card
    atomic_write(readme, card.content.encode())
    return card
