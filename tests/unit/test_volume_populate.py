"""runner/rootfs.populate: an empty volume gets the image's files at its mount point; a name another
writer took meanwhile (a symlink out of the volume) stops the copy instead of being followed."""

from __future__ import annotations

import os
import stat

import pytest

from runner import rootfs


def _image_dir(tmp_path):
    source = tmp_path / "image" / "data"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_text("hello")
    os.chmod(source / "sub" / "f", 0o640)
    os.symlink("/etc/passwd", source / "link")
    os.mkfifo(source / "fifo")
    os.chmod(source, 0o750)
    return source


def test_an_empty_volume_is_filled_and_a_full_one_left(tmp_path):
    source, volume = _image_dir(tmp_path), tmp_path / "vol"
    volume.mkdir()
    rootfs.populate(str(source), str(volume))
    assert (volume / "sub" / "f").read_text() == "hello"
    assert stat.S_IMODE(os.stat(volume / "sub" / "f").st_mode) == 0o640
    assert os.readlink(volume / "link") == "/etc/passwd"
    assert not os.path.lexists(volume / "fifo")
    assert stat.S_IMODE(os.stat(volume).st_mode) == 0o750
    (source / "new").write_text("x")
    rootfs.populate(str(source), str(volume))  # not empty any more: left alone
    assert not (volume / "new").exists()


def test_a_symlink_planted_meanwhile_is_not_followed(tmp_path):
    source, volume, outside = _image_dir(tmp_path), tmp_path / "vol", tmp_path / "outside"
    volume.mkdir()
    outside.mkdir()
    os.symlink(str(outside), volume / "sub")  # another container's doing, after the emptiness check
    fd = os.open(volume, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            rootfs._copy_into(str(source), fd)
    finally:
        os.close(fd)
    assert os.listdir(outside) == []
