"""The Hub: download and push through huggingface_hub (`client`), and a self-hosted Hub-compatible server (`server`)."""

from .client import endpoint, push_folder, resolve_model_dir, validate_repo_id, with_retries

__all__ = ["endpoint", "push_folder", "resolve_model_dir", "validate_repo_id", "with_retries"]
