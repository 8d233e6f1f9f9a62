"""A self-hosted, Hub-compatible HTTP server for the unmodified ``huggingface_hub`` client.

It implements the part of the Hugging Face Hub HTTP API that ``huggingface_hub`` uses to
create repos and branches, commit files (inline and through the LFS "basic" transfer), read
repo info and trees, and download files (``hf_hub_download`` / ``snapshot_download``).
Storage is described in ``store.py``.

Pointing a client at the server (``serve`` prints the same hints):

* another process: set ``HF_ENDPOINT=http://HOST:PORT`` and ``HF_HUB_DISABLE_XET=1`` in its
  environment before it imports ``huggingface_hub``;
* this process: wrap the calls in ``with use_endpoint(url):`` (patches the constants that
  ``huggingface_hub`` computed at import time), or pass ``endpoint=url`` to ``HfApi``,
  ``hf_hub_download`` and ``snapshot_download`` *and* disable Xet yourself.

Xet must be disabled on the client for uploads: when the ``hf_xet`` package is installed the
client uploads every LFS file through Xet storage, whatever the server answers, and this
server does not speak the Xet protocol (it answers the Xet token routes with a 501 that says
so). Downloads never use Xet here: the server sends no Xet headers.

Auth: with a ``token``, every write (create/delete repo, preupload, commit, LFS batch, branch,
tag) needs ``Authorization: Bearer <token>``; reads of private repos need it too (without it a
private repo answers 404, like a missing one), LFS verify included. Without a token the server is
open. ``/api/validate-yaml`` stays open, as on the Hub: the client's ``RepoCard.validate`` (called
by ``ModelCard.push_to_hub``) sends no token.

Hostile input: authentication and authorisation come before any request body is read; JSON
bodies are capped at 16 MiB, commit NDJSON is streamed line by line (16 MiB per line), LFS uploads
at the size the batch call declared; every body is validated by shape (pydantic), so malformed
input answers 400 with ``X-Error-Message``; YAML is parsed with a loader that refuses alias bombs.

Bare repo ids (``name``) are aliases of ``<DEFAULT_USER>/name``, the namespace a repo created
without an organization gets (the Hub does the same with the user's namespace).

Modules: ``app`` (routes and wiring, running), ``repo_api`` (the per-repo API), ``lfs``, ``auth``,
``models`` (request bodies), ``store`` (storage, no HTTP), ``names`` (naming rules), ``errors``
(domain errors), ``responses`` (HTTP answers), ``cards`` (front matter), ``views`` (JSON views),
``urls``.
"""

from ..client import use_endpoint  # the client side; importable from here as before
from .app import create_app, running_server, serve
from .names import DEFAULT_USER

__all__ = ["DEFAULT_USER", "create_app", "running_server", "serve", "use_endpoint"]
