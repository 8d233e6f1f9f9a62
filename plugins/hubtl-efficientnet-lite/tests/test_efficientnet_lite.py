"""Tests of the efficientnet_lite plugin: weight conversion, real ImageNet predictions, conformance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import hubtl
from hubtl.testing import assert_backbone_conforms
from hubtl_efficientnet_lite import (
    EfficientNetLitePlugin,
    convert_state_dict,
    create_imagenet_classifier,
    load_reference_state_dict,
)

#: Real photos (ants vs bees) beside the checkout, or where HUBTL_HYMENOPTERA points.
HYMENOPTERA = Path(os.environ.get("HUBTL_HYMENOPTERA", Path(__file__).resolve().parents[4] / "shared" / "data" / "hymenoptera"))
#: ImageNet-1k: 300..326 are insects; 309 is bee, 310 is ant.
INSECTS, BEE, ANT = range(300, 327), 309, 310


def photos(cls: str, n: int) -> list[Path]:
    """The first `n` validation photos of a class, or skip when the data set is absent."""
    folder = HYMENOPTERA / "val" / cls
    if not folder.is_dir():
        pytest.skip(f"hymenoptera photos not found at {HYMENOPTERA}; set HUBTL_HYMENOPTERA")
    return sorted(folder.iterdir())[:n]


def test_conformance_with_the_real_weights() -> None:
    report = assert_backbone_conforms(EfficientNetLitePlugin, "efficientnet_lite0", pretrained=True)
    assert report["create"].passed and "feature_dim=1280" in report["create"].message


def test_conformance_through_the_installed_entry_point() -> None:
    """`pip install` registered the plugin under the name its specs carry."""
    info = {p.name: p for p in hubtl.list_plugins()}["efficientnet_lite"]
    assert info.available and info.package == "hubtl-efficientnet-lite", info
    assert_backbone_conforms("efficientnet_lite:efficientnet_lite0", checks=["spec", "list_models"])


def test_reference_tensors_map_in_order_onto_timm_shapes() -> None:
    import timm

    reference = load_reference_state_dict()
    source = [k for k in reference if not k.endswith("num_batches_tracked")]
    full = timm.create_model("efficientnet_lite0", pretrained=False)
    targets = [k for k in full.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(source) == len(targets) == 247
    assert [tuple(reference[s].shape) for s in source] == [tuple(full.state_dict()[t].shape) for t in targets]
    assert source[-2:] == ["_fc.weight", "_fc.bias"] and targets[-2:] == ["classifier.weight", "classifier.bias"]

    headless = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    converted = convert_state_dict(reference, headless)  # the classifier is dropped, not misplaced
    assert set(converted) == set(headless.state_dict())
    assert torch.equal(converted["conv_stem.weight"], reference["_conv_stem.weight"])
    assert torch.equal(converted["bn2.running_var"], reference["_bn1.running_var"])  # the last feature tensor


def test_pretrained_features_come_from_the_reference_weights() -> None:
    backbone = EfficientNetLitePlugin().create("efficientnet_lite0", pretrained=True)
    reference = load_reference_state_dict()
    assert torch.equal(backbone.model.blocks[6][0].conv_pwl.weight, reference["_blocks.15._project_conv.weight"])
    random = EfficientNetLitePlugin().create("efficientnet_lite0", pretrained=False)
    assert not torch.equal(random.model.conv_stem.weight, backbone.model.conv_stem.weight)


def test_preprocessing_uses_the_lite_normalisation() -> None:
    config = EfficientNetLitePlugin().create("efficientnet_lite0", pretrained=False).preprocessor().config()
    assert config["mean"] == [0.5, 0.5, 0.5] and config["std"] == [0.5, 0.5, 0.5]
    assert config["input_size"] == [3, 224, 224] and config["interpolation"] == "bicubic"


def test_converted_classifier_sees_insects_in_real_photos() -> None:
    """With its ImageNet classifier, the converted model puts an insect in the top 5 of every photo, mostly the right one."""
    from hubtl_efficientnet_lite import LitePreprocessor
    from hubtl_efficientnet_lite.preprocess import DEFAULT_DATA_CONFIG

    model = create_imagenet_classifier()
    files = photos("ants", 3) + photos("bees", 3)
    truth = [ANT] * 3 + [BEE] * 3
    with torch.no_grad():
        top5 = model(LitePreprocessor(DEFAULT_DATA_CONFIG)(files)["pixel_values"]).topk(5).indices.tolist()
    assert all(any(c in INSECTS for c in row) for row in top5), top5
    assert sum(label in row for label, row in zip(truth, top5)) >= 5, top5


def test_unknown_model_and_bad_kwargs_say_what_to_do() -> None:
    with pytest.raises(hubtl.BackboneNotFoundError, match="Did you mean efficientnet_lite0"):
        EfficientNetLitePlugin().create("efficientnet_lite1", pretrained=False)
    with pytest.raises(hubtl.ConfigError, match="rejected backbone kwargs"):
        EfficientNetLitePlugin().create("efficientnet_lite0", pretrained=False, no_such_option=1)


def test_image_size_and_timm_kwargs_survive_the_spec() -> None:
    plugin = EfficientNetLitePlugin()
    backbone = plugin.create("efficientnet_lite0", pretrained=False, image_size=160, drop_path_rate=0.1)
    spec = backbone.spec()
    assert spec["kwargs"] == {"drop_path_rate": 0.1} and spec["data_config"]["input_size"] == [3, 160, 160]
    rebuilt = plugin.from_spec(spec, None)
    assert rebuilt.spec() == spec and rebuilt.preprocessor().config()["input_size"] == [3, 160, 160]
