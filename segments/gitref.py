"""A specs directory as it is at a git revision, read without touching the work tree.

``segments review --base REF`` compares the specs at ``REF`` with the working tree.
The files at ``REF`` come straight from the repository's objects (``git archive``),
so uncommitted work, the index and the checked-out branch stay as they are.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from segments.errors import SegmentsError


@dataclass(frozen=True)
class Revision:
    """A resolved revision: what the user wrote and the commit it names."""

    ref: str
    commit: str

    @property
    def label(self) -> str:
        """``REF (abc1234)``, or the short commit alone when the ref is one.

        >>> Revision("main", "0123456789abcdef").label
        'main (0123456)'
        >>> Revision("0123456", "0123456789abcdef").label
        '0123456'
        """
        short = self.commit[:7]
        return short if self.commit.startswith(self.ref) else f"{self.ref} ({short})"


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "--literal-pathspecs", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise SegmentsError("git is not installed: `segments review` reads the base specs from git") from None


def _stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode(errors="replace").strip()


def repository_root(path: Path) -> Path:
    """The top of the git work tree holding ``path``.

    Raises:
        SegmentsError: when ``path`` is not inside a git work tree.
    """
    result = _git(path, "rev-parse", "--show-toplevel")
    if result.returncode != 0:
        raise SegmentsError(f"{path} is not in a git repository: `segments review` compares with a git revision")
    return Path(result.stdout.decode().strip()).resolve()


def resolve(root: Path, ref: str) -> Revision:
    """The commit ``ref`` names.

    Raises:
        SegmentsError: when ``ref`` names no commit.
    """
    if not ref or ref.startswith("-"):
        raise SegmentsError(f"--base {ref!r}: expected a git revision such as main, origin/main or a commit")
    result = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode != 0:
        raise SegmentsError(f"--base {ref!r}: no such git revision (fetch it first, e.g. `git fetch origin {ref}`)")
    return Revision(ref, result.stdout.decode().strip())


def export_directory(root: Path, revision: Revision, directory: Path, into: Path) -> Path | None:
    """Write the files of ``directory`` (inside ``root``) at ``revision`` under ``into``.

    Returns:
        Where the directory's copy is (``into`` plus the same path relative to the
        repository), or None when the directory does not exist at ``revision``.

    Raises:
        SegmentsError: when git cannot read the revision.
    """
    try:
        relative = directory.resolve().relative_to(root)
    except ValueError:
        raise SegmentsError(f"{directory} is not inside the git repository at {root}") from None
    spec = relative.as_posix() if relative.parts else "."
    if relative.parts:
        listed = _git(root, "ls-tree", "--name-only", revision.commit, "--", spec)
        if listed.returncode != 0:
            raise SegmentsError(f"cannot list {spec} at {revision.label}: {_stderr(listed)}")
        if not listed.stdout.strip():
            return None
    archive = _git(root, "archive", "--format=tar", revision.commit, "--", spec)
    if archive.returncode != 0:
        raise SegmentsError(f"cannot read {spec} at {revision.label}: {_stderr(archive)}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / relative
