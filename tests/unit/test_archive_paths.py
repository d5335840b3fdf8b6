"""runner/archive.py's pure parts: paths as Docker takes them, Go's FileMode bits docker cp reads."""

from __future__ import annotations

import stat

from runner.archive import absolute, base_name, go_file_mode


def test_paths_are_absolute_and_keep_what_a_trailing_slash_or_dot_means():
    assert absolute("etc/hosts") == "/etc/hosts"
    assert absolute("//etc//hosts") == "/etc/hosts"
    assert absolute("/tmp/") == "/tmp/"  # the directory itself, a symlink followed
    assert absolute("/out/.") == "/out/."  # its contents
    assert absolute("/a/../../b") == "/b"
    assert absolute("") == absolute("/") == "/"


def test_base_names_as_gos_filepath_base():
    assert base_name("/etc/hosts") == "hosts"
    assert base_name("/tmp/") == "tmp"
    assert base_name("/out/.") == "."
    assert base_name("/") == "/"


def test_go_file_mode_bits():
    assert go_file_mode(stat.S_IFREG | 0o644) == 0o644
    assert go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == (1 << 31) | (1 << 20) | 0o777
