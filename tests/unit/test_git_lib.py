"""The ref-to-commit rules of module_utils/djdeploy_git.py (no git, no network)."""

from __future__ import annotations

import pytest

from .loader import load

git = load("roles/release/module_utils/djdeploy_git.py")

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
LISTING = (
    f"{A}\tHEAD\n{B}\trefs/heads/v2\n{C}\trefs/tags/v2\n{D}\trefs/tags/v2^{{}}\n"
    f"{A}\trefs/heads/main\n{B}\trefs/tags/light\n"
)


@pytest.mark.parametrize(
    ("ref", "commit"),
    [
        ("main", A),
        ("HEAD", A),
        ("light", B),  # a lightweight tag
        ("v2", D),  # an annotated tag wins over the branch of the same name, peeled
        ("refs/heads/v2", B),
        ("e" * 40, "e" * 40),  # a full commit id is taken as given
        ("nope", ""),
        ("E" * 40, ""),  # not a commit id (upper case), and no such ref
    ],
)
def test_pick_commit(ref: str, commit: str) -> None:
    assert git.pick_commit(ref, LISTING) == commit


def test_resolve_ref_names_the_cause_and_the_fix() -> None:
    seen: list[list[str]] = []

    def ls_remote(argv: list[str]) -> tuple[int, str, str]:
        seen.append(argv)
        return 0, LISTING, ""

    assert git.resolve_ref(ls_remote, "git@example.org:demo.git", "v2", "deploy", "web1") == D
    assert seen == [["git", "ls-remote", "--", "git@example.org:demo.git", "v2", "v2^{}"]]
    with pytest.raises(git.GitError, match=r"the ref 'nope' does not exist.*release_ref"):
        git.resolve_ref(ls_remote, "r", "nope", "deploy", "web1")
    with pytest.raises(git.GitError, match=r"cannot read the git repository 'r' as deploy on web1"):
        git.resolve_ref(lambda argv: (128, "", "denied"), "r", "main", "deploy", "web1")
