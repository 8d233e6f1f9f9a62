"""Domain errors of the Hub server's storage and validation; app maps each kind to an HTTP answer."""

from __future__ import annotations


class StoreError(Exception):
    """A request the store cannot serve; the message says what to do."""


class BadRequest(StoreError):
    """Invalid input: a name, a path, a revision, an operation."""


class RepoNotFound(StoreError):
    """No such repo (or the caller may not see it)."""

    def __init__(self, repo_id: str):
        super().__init__(f"Repository not found: {repo_id}")


class RevisionNotFound(StoreError):
    """No branch, tag or commit by that name."""

    def __init__(self, revision: str):
        super().__init__(f"Invalid rev id: {revision}")


class EntryNotFound(StoreError):
    """No file (or folder) at that path; ``commit`` is the commit that was looked in, if known."""

    def __init__(self, path: str, commit: str | None = None):
        super().__init__(f"Entry not found: {path}")
        self.commit = commit


class ParentCommitMismatch(StoreError):
    """The branch moved since the parent commit the client based its commit on."""

    def __init__(self) -> None:
        super().__init__("A commit has happened since. Please refresh and try again.")
