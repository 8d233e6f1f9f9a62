"""The HubtlError family: every error hubtl raises on purpose says what went wrong and what to do."""

from __future__ import annotations


class HubtlError(Exception):
    """Base of every error hubtl raises on purpose."""


class ConfigError(HubtlError, ValueError):
    """A training config or a saved model config is invalid."""


class BackboneNotFoundError(HubtlError, KeyError):
    """No plugin or model matches a backbone name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class PluginUnavailableError(HubtlError, ImportError):
    """A plugin is registered but cannot be imported, or is not installed."""


class ModelLoadError(HubtlError, OSError):
    """A saved model directory or Hub repo cannot be loaded."""


class ConfigFileError(ModelLoadError, ConfigError):
    """A saved model's config.json is invalid, tampered with, or written by a newer hubtl."""


class PluginError(HubtlError, TypeError):
    """A backbone plugin does not implement the transfer interface as documented (a fix for the plugin's author)."""


class InvalidInputError(HubtlError, ValueError):
    """Raw inputs given to predict/embed or found in a dataset are unusable."""


class DataError(HubtlError, ValueError):
    """A dataset cannot be loaded or does not match the config."""


class HubError(HubtlError, OSError):
    """Talking to the Hub failed."""


class ExportError(HubtlError, ValueError):
    """A model cannot be exported exactly to the asked format; the message says why and which format or training works."""
