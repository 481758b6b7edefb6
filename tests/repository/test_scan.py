"""The repository listing: cached between calls (the index and every /metrics scrape ask for it on the
event loop), listed again when the repository folder changes, a warning once per skipped folder."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from modelserve.repository.scan import RepositoryListing

SETTLED_NS = 10 * 10**9  # well past the listing's racy window (2 s)


def set_mtime(folder: Path, mtime_ns: int) -> None:
    os.utime(folder, ns=(mtime_ns, mtime_ns))


def make_repo(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "repo"
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def test_the_listing_is_read_again_only_when_the_folder_changes(tmp_path: Path) -> None:
    root = make_repo(tmp_path, "a", "b")
    old_ns = time.time_ns() - SETTLED_NS
    set_mtime(root, old_ns)
    listing = RepositoryListing(root)
    assert listing.names() == ["a", "b"]
    # A rename with the folder's mtime put back: one stat sees nothing changed, so nothing is listed.
    (root / "b").rename(root / "c")
    set_mtime(root, old_ns)
    assert listing.names() == ["a", "b"]
    # The mtime moved: listed again.
    set_mtime(root, old_ns + 1)
    assert listing.names() == ["a", "c"]


def test_a_change_in_the_same_timestamp_step_as_the_last_listing_is_not_missed(tmp_path: Path) -> None:
    root = make_repo(tmp_path, "a", "b")
    now_ns = time.time_ns()
    set_mtime(root, now_ns)
    listing = RepositoryListing(root)
    assert listing.names() == ["a", "b"]
    # Renamed within the same mtime step (a coarse file system clock): the mtime reads the same, but a
    # listing this close to its mtime is not trusted.
    (root / "b").rename(root / "c")
    set_mtime(root, now_ns)
    assert listing.names() == ["a", "c"]


def test_skipped_folders_are_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_repo(tmp_path, "a", "not a model!", ".hidden")
    (root / "a_file").write_text("not a folder")
    listing = RepositoryListing(root)
    with caplog.at_level(logging.WARNING, logger="modelserve.repository.scan"):
        for step in range(5):
            set_mtime(root, time.time_ns() - SETTLED_NS + step)  # listed again each time
            assert listing.names() == ["a"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["skipping folder 'not a model!' in the model repository: not a valid model name"]


def test_a_missing_repository_lists_no_models_until_it_appears(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    listing = RepositoryListing(root)
    assert listing.names() == []
    (root / "a").mkdir(parents=True)
    assert listing.names() == ["a"]
