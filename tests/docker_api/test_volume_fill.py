"""A named volume found empty is filled with what the image has at its mount point, as Docker fills
it on first use (links, modes and owners kept); a volume with something in it is left as it is, and
nocopy (-v NAME:/p:nocopy, --mount volume-nocopy) leaves it empty. Before, every new volume hid the
image's files at its path."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def test_an_empty_named_volume_gets_the_images_files(dhost):
    run = lambda *args: dhost.docker("run", "--rm", *args).stdout.strip()  # noqa: E731
    assert run("-v", "tools:/usr/bin", "busybox", "readlink", "/usr/bin/awk") == "/bin/busybox"
    assert run("-v", "tools:/data", "busybox", "readlink", "/data/awk") == "/bin/busybox"  # kept in the volume
    assert run("-v", "home:/root", "busybox", "stat", "-c", "%a %u", "/root") == "700 0"  # the directory's mode
    # not empty any more: mounted elsewhere, nothing of that place is added
    run("-v", "tools:/usr/sbin", "busybox", "true")
    assert run("-v", "tools:/data", "busybox", "sh", "-c", "ls /data | wc -l") == run(
        "busybox", "sh", "-c", "ls /usr/bin | wc -l")
    assert run("-v", "bare:/usr/bin:nocopy", "busybox", "/bin/busybox", "ls", "/usr/bin") == ""
    assert run("--mount", "type=volume,src=bare2,dst=/usr/bin,volume-nocopy", "busybox", "/bin/busybox", "ls",
               "/usr/bin") == ""  # fmt: skip
    assert run("-v", "bare:/data", "busybox", "ls", "/data") == ""
    dhost.docker("volume", "rm", "tools", "home", "bare", "bare2")
    out = dhost.netctl("run", "--rm", "-v", "viacli:/usr/bin", "busybox", "readlink", "/usr/bin/awk").stdout
    assert out.strip() == "/bin/busybox"
    dhost.docker("volume", "rm", "viacli")
