"""Saved models for the inference items (cold start, predict): one hubtl model and the same weights in native form.

image: a timm model with a 2-class head saved by hubtl (`save_pretrained`), and the very same
weights as a plain timm state dict (`timm.create_model(name, num_classes=2)` layout, safetensors).
text: an encoder with a 2-class head saved by hubtl, the same encoder saved by transformers'
`save_pretrained` (with its tokenizer), and the head's Linear as safetensors.
`prepare` checks that both forms give the same logits before anything is timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import Context, run_child


def ensure(ctx: Context, kinds: list[str], image: dict[str, Any], text: dict[str, Any]) -> dict[str, Any]:
    """Create the saved models once per run (in a subprocess); return their paths."""
    manifest = ctx.work / "models" / "manifest.json"
    known = json.loads(manifest.read_text()) if manifest.is_file() else {}
    missing = [k for k in kinds if k not in known]
    if missing:
        run_child(ctx, f"artifacts_{'_'.join(missing)}", __name__, "prepare", work=str(ctx.work), data=str(ctx.data),
                  kinds=missing, image=image, text=text)
        known = json.loads(manifest.read_text())
    return known


def prepare(work: str, data: str, kinds: list[str], image: dict[str, Any], text: dict[str, Any]) -> dict[str, Any]:
    import torch

    from hubtl import TransferModel

    from . import fixtures

    root = Path(work) / "models"
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    torch.manual_seed(0)
    if "image" in kinds:
        import timm
        from safetensors.torch import save_file

        model = TransferModel.from_backbone(f"timm:{image['model']}", labels=fixtures.IMAGE_LABELS, pretrained=False,
                                            image_size=image["size"])
        hubtl_dir = model.save_pretrained(root / "hubtl-image")
        net = timm.create_model(image["model"], pretrained=False, num_classes=2)
        state = dict(model.backbone.model.state_dict())
        classifier = net.pretrained_cfg.get("classifier", "fc")
        linear = model.head.layers[-1]
        state[f"{classifier}.weight"], state[f"{classifier}.bias"] = linear.weight, linear.bias
        net.load_state_dict(state, strict=True)
        weights = root / "timm-image.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
        x = torch.randn(2, 3, image["size"], image["size"])
        with torch.no_grad():
            same = torch.allclose(model.eval()({"pixel_values": x}), net.eval()(x), atol=1e-5)
        if not same:
            raise RuntimeError("the timm state dict does not reproduce the hubtl model's logits")
        manifest["image"] = {"hubtl_dir": str(hubtl_dir), "timm_weights": str(weights), "model": image["model"],
                             "size": image["size"], "images": [str(p) for p in fixtures.hymenoptera_images(data, "val")]}
    if "text" in kinds:
        from safetensors.torch import save_file
        from transformers import AutoModel, AutoTokenizer

        encoder = fixtures.text_encoder_dir(work, text["model"], data)
        model = TransferModel.from_backbone(f"transformers:{encoder}", labels=fixtures.LABELS, pooling="mean",
                                            max_length=text["max_length"])
        hubtl_dir = model.save_pretrained(root / "hubtl-text")
        hf_dir = root / "hf-text"
        AutoModel.from_pretrained(encoder).save_pretrained(hf_dir)
        AutoTokenizer.from_pretrained(encoder).save_pretrained(hf_dir)
        linear = model.head.layers[-1]
        head = root / "text-head.safetensors"
        save_file({"weight": linear.weight.detach().contiguous(), "bias": linear.bias.detach().contiguous()}, str(head))
        manifest["text"] = {"hubtl_dir": str(hubtl_dir), "hf_dir": str(hf_dir), "head": str(head), "model": text["model"],
                            "max_length": text["max_length"],
                            "sentences": [s for s, _ in fixtures.read_sst2(data, "dev", 2048)]}
    manifest_path.write_text(json.dumps(manifest))
    return {"kinds": kinds}
