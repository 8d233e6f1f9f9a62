"""Talking to a Hub through `huggingface_hub`: endpoints, offline mode, downloads and pushes.

This is the only module that changes `huggingface_hub.constants` (which the client computes from the
environment at import time): `use_endpoint` points this process at another Hub (hubtl's own server),
`offline` forbids downloads, `use_plain_lfs_off_hf` turns Xet off for Hubs that speak plain LFS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import HubError, HubtlError, ModelLoadError

logger = logging.getLogger("hubtl")

T = TypeVar("T")

#: Seconds to wait before each retry when the Hub cannot be reached.
RETRY_DELAYS = (1.0, 2.0, 4.0)
#: What a Hub repo ID looks like: 'name' or 'namespace/name' (huggingface_hub's own rule, without a request).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_repo_id(text: str) -> bool:
    """True when `text` has the form of a Hub repo ID ('name' or 'namespace/name'); nothing is looked up."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not text.endswith((".", "-"))


def endpoint() -> str:
    """The Hub endpoint the client talks to (HF_ENDPOINT or huggingface.co)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def use_plain_lfs_off_hf() -> None:
    """Turn Xet uploads off unless the endpoint is huggingface.co: other Hubs (hubtl's own server) take plain LFS."""
    from huggingface_hub import constants

    if "huggingface.co" not in endpoint():
        os.environ["HF_HUB_DISABLE_XET"] = "1"
        constants.HF_HUB_DISABLE_XET = True


@contextlib.contextmanager
def use_endpoint(url: str, *, disable_xet: bool = True) -> Iterator[str]:
    """Make the unmodified `huggingface_hub` client of this process use `url` (restored on exit).

    Sets env HF_ENDPOINT (and HF_HUB_DISABLE_XET=1, inherited by subprocesses) and patches what
    `huggingface_hub` computed from them at import: `constants.ENDPOINT`, `HUGGINGFACE_CO_URL_TEMPLATE`,
    `HF_URL_HOSTS`, `HF_HUB_DISABLE_XET` and the module-level `HfApi` behind `huggingface_hub.create_repo`
    & co. `HfApi` objects created before entering keep their old endpoint. Not thread-safe: it changes
    process-wide state.
    """
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import constants

    url = url.rstrip("/")
    env_keys = ("HF_ENDPOINT", "HF_HUB_DISABLE_XET")
    saved_env = {k: os.environ.get(k) for k in env_keys}
    names = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_URL_HOSTS", "HF_HUB_DISABLE_XET")
    saved = {name: getattr(constants, name) for name in names}
    saved_api_endpoint = hf_api.api.endpoint
    os.environ["HF_ENDPOINT"] = url
    constants.ENDPOINT = url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_URL_HOSTS = frozenset(saved["HF_URL_HOSTS"] | {(urlsplit(url).hostname or "").lower()})
    if disable_xet:
        os.environ["HF_HUB_DISABLE_XET"] = "1"
        constants.HF_HUB_DISABLE_XET = True
    hf_api.api.endpoint = url
    try:
        yield url
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)
        hf_api.api.endpoint = saved_api_endpoint
        _restore_env(saved_env)


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Forbid Hub downloads for the duration: HF_HUB_OFFLINE=1 in os.environ and in huggingface_hub's constants."""
    from huggingface_hub import constants

    saved_env = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE")}
    saved_constant = constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True  # read at import time; transformers and snapshot_download consult it per call
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_constant
        _restore_env(saved_env)


def _restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as they were (unset where they were unset)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


#: Seconds `hub_reachable` waits for any answer from the Hub.
PROBE_TIMEOUT_S = 3.0


def hub_reachable() -> bool:
    """Whether the Hub answers at all (one request, a few seconds at most); False in offline mode.

    huggingface_hub retries a refused connection for about a minute before it gives up: a download that
    may fall back on the cache asks this first and, when the Hub is out of reach, runs `offline()`.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(endpoint(), timeout=PROBE_TIMEOUT_S, follow_redirects=False)
    except Exception as err:  # any transport failure: refused, reset, timed out, DNS
        logger.info("The Hub at %s cannot be reached (%s): using the local cache only.", endpoint(), type(err).__name__)
        return False
    return True


def is_unreachable(err: BaseException) -> bool:
    """True for network failures worth retrying (refused, reset, timed out), whatever HTTP library raised them."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    chain = [err, err.__cause__, err.__context__]
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return False  # HF_HUB_OFFLINE=1: no retry can help
    for e in chain:
        if e is None:
            continue
        names = {cls.__name__ for cls in type(e).__mro__}
        if isinstance(e, (ConnectionError, TimeoutError)) or names & {"TransportError", "ConnectError", "TimeoutException"}:
            return True
    return isinstance(err, LocalEntryNotFoundError) and "Connect" in str(err)


def with_retries(action: Callable[[], T], what: str) -> T:
    """Run a Hub call, retrying with back-off while the Hub is unreachable, then raise a clear HubError."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return action()
        except Exception as err:
            if not is_unreachable(err):
                raise
            if delay is None:
                raise HubError(
                    f"Could not reach the Hub at {endpoint()} to {what} after {len(RETRY_DELAYS) + 1} tries ({err}). "
                    "Check HF_ENDPOINT and your network, or start a local Hub with `hubtl hub serve`."
                ) from err
            logger.warning("Hub at %s unreachable (%s); retrying in %.0fs.", endpoint(), type(err).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def validate_repo_id(repo_id: str) -> str:
    """Check a Hub repo ID ('name' or 'namespace/name'), raising a HubError that shows the expected form."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as _validate

    try:
        _validate(repo_id)
    except HFValidationError as err:
        raise HubError(f"{repo_id!r} is not a valid Hub repo ID: {err} Use 'namespace/name', e.g. 'me/resnet-ants'.") from err
    return repo_id


def resolve_model_dir(
    model_id: str | os.PathLike,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    allow_patterns: list[str] | None = None,
) -> Path:
    """Return a local directory holding the model: `model_id` itself, or its Hub snapshot (HF cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    text = os.fspath(model_id)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise ModelLoadError(f"No model directory at {text}. Give an existing directory or a Hub ID 'namespace/name'.")
    repo_id = validate_repo_id(text)

    def download() -> str:
        return snapshot_download(
            repo_id=repo_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            allow_patterns=allow_patterns,
        )

    try:
        return _download_with_hint(download, repo_id, text)
    except RepositoryNotFoundError as err:
        raise ModelLoadError(
            f"No model repo {repo_id!r} at {endpoint()}, or it is private (log in with `hf auth login` or set HF_TOKEN)."
            + _local_hint(text)
        ) from err
    except RevisionNotFoundError as err:
        raise ModelLoadError(f"Repo {repo_id!r} has no revision {revision!r}; give a branch, tag or commit SHA that exists.") from err
    except LocalEntryNotFoundError as err:
        raise HubError(
            f"{repo_id!r} is not in the local Hugging Face cache and the Hub cannot be used (offline mode?): {err}"
            + _local_hint(text)
        ) from err
    except ValueError as err:  # e.g. a file name in the repo's tree that would leave the download folder
        raise ModelLoadError(f"{repo_id!r} cannot be downloaded safely: {err} Do not load this repo.") from err


def _download_with_hint(download: Any, repo_id: str, text: str) -> Path:
    """Download; a hubtl error for a name that may be a mistyped local path also says so (`_local_hint`)."""
    try:
        return Path(with_retries(download, f"download {repo_id}"))
    except HubtlError as err:
        hint = _local_hint(text)
        if not hint:
            raise
        raise type(err)(f"{err}{hint}") from err


def _local_hint(text: str) -> str:
    """' (There is no local folder X either. Did you mean Y?)' when X's parent is a local folder, else ''."""
    parent = Path(text).parent
    if str(parent) in ("", ".") or not parent.is_dir():
        return ""
    import difflib

    close = difflib.get_close_matches(Path(text).name, [p.name for p in parent.iterdir() if p.is_dir()], n=1)
    return f" (There is no local folder {text!r} either.{f' Did you mean {str(parent / close[0])!r}?' if close else ''})"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    ignore_patterns: list[str] | None = None,
    **kwargs: Any,
) -> str:
    """Create the repo (and branch) if needed and upload a folder as one commit; return the commit URL."""
    from huggingface_hub import HfApi

    validate_repo_id(repo_id)
    use_plain_lfs_off_hf()
    api = HfApi(token=token)
    with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"create {repo_id}")
    if revision:
        with_retries(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), f"create branch {revision}")
    info = with_retries(
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=os.fspath(folder),
            revision=revision,
            commit_message=commit_message or "Upload model with hubtl",
            ignore_patterns=ignore_patterns,
            **kwargs,
        ),
        f"upload to {repo_id}",
    )
    return str(getattr(info, "commit_url", info))
