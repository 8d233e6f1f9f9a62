"""Sharded training (FSDP) as Accelerate runs it: requested by `accelerate launch --use_fsdp` or a config file.

hubtl adds three things around Accelerate's FSDP: it lets Accelerate choose FSDP on CPU processes too (gloo;
Accelerate only picks it for accelerator devices and would otherwise run plain DDP), it fills the wrap policy
from the backbone's layer groups (each group held by one module becomes one FSDP unit), and it gathers the
full state dict for the files hubtl writes (best weights, the final model), which stay in hubtl's format.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import ConfigError


def fsdp_requested() -> bool:
    """Whether this process was launched for FSDP (`accelerate launch --use_fsdp`, or `distributed_type: FSDP`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def allow_fsdp_on_cpu() -> None:
    """Let Accelerate choose FSDP for CPU processes (gloo), as it does for GPUs; call before creating the Accelerator.

    Accelerate decides FSDP only when the process group's type is an accelerator's; torch's FSDP2 itself runs
    on CPU with gloo, so the CPU process group is presented as the GPU kind, which AcceleratorState reads once.
    """
    if not fsdp_requested():
        return
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "false").lower() == "true")
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.MULTI_GPU


def is_sharded(accelerator: Any) -> bool:
    """Whether the run's model is sharded over processes (FSDP)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def check_fsdp_config(accelerator: Any, strategy: Any) -> None:
    """Refuse a strategy that cannot run on a sharded model (its `fsdp_refusal`), before any data is read."""
    if is_sharded(accelerator) and strategy.fsdp_refusal:
        raise ConfigError(f"strategy {strategy.name} is not supported with FSDP: {strategy.fsdp_refusal}.")


def layer_group_modules(model: nn.Module, groups: list[list[nn.Parameter]]) -> list[nn.Module]:
    """The outermost module holding exactly each layer group's parameters (groups no single module holds are left out)."""
    wanted = [frozenset(id(p) for p in group) for group in groups if group]
    found: list[nn.Module] = []
    for group in wanted:
        for module in model.modules():  # parents come before their children: the first match is the outermost
            params = frozenset(id(p) for p in module.parameters())
            if params == group:
                found.append(module)
                break
    return found


def wrap_class_names(model: nn.Module, units: list[nn.Module]) -> list[str]:
    """Class names for a transformer-style wrap policy: classes whose every instance with parameters is a unit.

    Accelerate's FSDP wraps modules by class; a class that also names modules outside the units (e.g. `Linear`)
    would wrap those too, so it is left out and its units stay in their parent's FSDP unit.
    """
    unit_ids = {id(m) for m in units}
    names: dict[str, bool] = {}
    for module in model.modules():
        if module is model or not any(True for _ in module.parameters()):
            continue
        name = type(module).__name__
        names[name] = names.get(name, True) and id(module) in unit_ids
    return sorted(name for name, only_units in names.items() if only_units and any(type(u).__name__ == name for u in units))


def set_wrap_policy(accelerator: Any, module: nn.Module, groups: list[list[nn.Parameter]]) -> list[str]:
    """Wrap each layer group's module as one FSDP unit unless the launch named classes or another policy; the names."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = accelerator.state.fsdp_plugin
    if plugin is None:
        return []
    if plugin.transformer_cls_names_to_wrap:  # named at launch
        return list(plugin.transformer_cls_names_to_wrap)
    if plugin.auto_wrap_policy not in (None, transformer_auto_wrap_policy):
        return []  # e.g. SIZE_BASED_WRAP, as launched
    names = wrap_class_names(module, layer_group_modules(module, groups))
    if names:
        plugin.auto_wrap_policy = transformer_auto_wrap_policy
        plugin.transformer_cls_names_to_wrap = names
    return names


def full_state_dict(accelerator: Any, module: nn.Module) -> dict[str, Any]:
    """The full (unsharded) state dict on the main process, on the CPU; every process must call it."""
    return accelerator.get_state_dict(module, unwrap=True)
