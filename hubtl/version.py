"""The installed hubtl version (a leaf module, so every other module can import it without a cycle)."""

__version__ = "0.1.0"
