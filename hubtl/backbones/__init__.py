"""Backbones: the transfer interface, the plugin registry and the built-in timm and transformers plugins."""

from .base import Backbone, BackbonePlugin, Preprocessor
from .registry import (
    PluginInfo,
    backbone_from_spec,
    create_backbone,
    get_plugin,
    list_backbones,
    list_plugins,
    register_plugin,
    reload_plugins,
    unregister_plugin,
)

__all__ = [
    "Backbone",
    "BackbonePlugin",
    "PluginInfo",
    "Preprocessor",
    "backbone_from_spec",
    "create_backbone",
    "get_plugin",
    "list_backbones",
    "list_plugins",
    "register_plugin",
    "reload_plugins",
    "unregister_plugin",
]
