"""Reading a git repository as the deploy user: resolve a ref to a commit.

Used by djdeploy_layout (the release's first call: which commit is this release?) and
djdeploy_build (the mirror). Commands run through djdeploy_accounts, as the deploy user, who
holds the repository's credentials.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Never ask for a password or a host key: a release runs unattended.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
COMMIT = re.compile(r"^[0-9a-f]{40}$")

# ls_remote(argv) -> (rc, stdout, stderr), run as the deploy user with GIT_ENV.
LsRemote = Callable[[list[str]], tuple[int, str, str]]


class GitError(Exception):
    """The repository cannot be read or the ref does not exist; the message says which."""


def ls_remote_argv(repo: str, ref: str) -> list[str]:
    """`git ls-remote` of the ref and of its peeled tag (``ref^{}``)."""
    return ["git", "ls-remote", "--", repo, ref, f"{ref}^{{}}"]


def pick_commit(ref: str, listing: str) -> str:
    """The commit a ref names in `git ls-remote` output, or "" when it names none.

    A full commit id is taken as given. Otherwise, in this order: the peeled tag (an annotated
    tag's commit), the tag, the branch, then the ref as written (``HEAD``, ``refs/...``).
    """
    if COMMIT.match(ref):
        return ref
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2:
            refs[parts[1]] = parts[0]
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in refs:
            return refs[name]
    return ""


def resolve_ref(ls_remote: LsRemote, repo: str, ref: str, user: str, host: str) -> str:
    """The commit of ref in repo, or GitError with the cause and the fix."""
    rc, out, err = ls_remote(ls_remote_argv(repo, ref))
    if rc != 0:
        raise GitError(
            f"release: cannot read the git repository '{repo}' as {user} on {host}: "
            f"{(err or out).strip() or f'git ls-remote exited {rc}'}. Check release_repo and "
            "that the deploy user can reach it (deploy key, path, URL)."
        )
    commit = pick_commit(ref, out)
    if not commit:
        raise GitError(
            f"release: the ref '{ref}' does not exist in '{repo}' (no branch or tag of that "
            "name). Set release_ref to an existing branch, tag or full commit id."
        )
    return commit
