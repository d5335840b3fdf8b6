"""Pure logic of the overlay driver and the etcd store: no kernel, no etcd."""

from __future__ import annotations

import pytest

from drivers.overlay import OverlayDriver, Peer
from libnetwork.errors import AlreadyExists, InvalidArgument
from libnetwork.model import Network, PoolConfig
from libnetwork.store.etcd import Keys, _GlobalPool, parse_url, prefix_end


def overlay(name: str = "ov", vni: str = "300", mtu: int = 1450, tag: str = "a") -> Network:
    return Network(id=(tag * 64)[:64], name=name, driver="overlay", scope="global", mtu=mtu,
                   driver_state={"vni": vni} if vni else {})


def test_options_accept_docker_names_and_refuse_nonsense():
    driver = OverlayDriver()
    assert driver.validate_options({"com.docker.network.driver.overlay.vxlanid_list": "4097", "port": " 4790 "}) == {
        "vni": "4097", "port": "4790"}
    with pytest.raises(InvalidArgument, match=r"port=80 of driver overlay is out of range \(1024-49151\)"):
        driver.validate_options({"port": "80"})
    with pytest.raises(InvalidArgument, match="must be a number"):
        driver.validate_options({"mtu": "big"})
    with pytest.raises(InvalidArgument, match="unknown option 'encrypted' for driver overlay"):
        driver.validate_options({"encrypted": "1"})
    assert driver.validate_options({"fastpath": "Off"}) == {"fastpath": "false"}
    assert driver.validate_options({"fastpath": "yes"}) == {"fastpath": "true"}
    with pytest.raises(InvalidArgument, match="option fastpath='maybe' of driver overlay must be true or false"):
        driver.validate_options({"fastpath": "maybe"})


def test_the_fast_path_program_jumps_where_its_c_says_and_ends_every_path_with_exit():
    import struct

    from drivers.overlay_fastpath import program

    code = program(map_fd=7, vxlan_index=3)
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    jumps = {pc: pc + 1 + off for pc, (opcode, _, off, _) in enumerate(insns)
             if opcode & 0x07 == 0x05 and opcode not in (0x85, 0x95)}
    # short frame / group address / not in the map / hairpin / from VXLAN to a remote MAC -> PASS (31);
    # the remote-endpoint test jumps to the bpf_redirect branch (27).
    assert jumps == {5: 31, 8: 31, 19: 31, 22: 27, 23: 31, 27: 31}
    assert insns[31] == (0xB7, 0, 0, -1) and insns[32][0] == 0x95  # PASS: return TCX_NEXT
    assert [pc for pc, insn in enumerate(insns) if insn[0] == 0x95] == [26, 30, 32]
    assert [(pc, imm) for pc, (opcode, _, _, imm) in enumerate(insns) if opcode == 0x85] == [(18, 1), (25, 155), (29, 23)]
    assert insns[14] == (0x18, 0x11, 0, 7) and insns[15] == (0, 0, 0, 0)  # r1 = map fd 7 (BPF_PSEUDO_MAP_FD)
    assert (insns[22][3], insns[27][3]) == (3, 3)  # compared with the VXLAN device's ifindex
    assert [insns[pc][2] for pc in (1, 2, 21)] == [76, 80, 40]  # __sk_buff data, data_end, ifindex


def test_plan_names_devices_after_the_network_and_refuses_a_taken_vni():
    driver = OverlayDriver(vtep="198.18.0.1")
    network = overlay()
    driver.plan_network(network, [], host=None)  # MTU given: the host is not consulted
    assert network.driver_state == {"vni": "300", "bridge": "no-aaaaaaaaaaaa", "vxlan": "nx-aaaaaaaaaaaa",
                                    "port": "4789"}
    with pytest.raises(AlreadyExists, match="VNI 300 is already used by network 'other'"):
        driver.plan_network(overlay(tag="b"), [overlay("other")], host=None)
    with pytest.raises(InvalidArgument, match="has no VNI; allocate one in the global store"):
        driver.plan_network(overlay(vni=""), [], host=None)
    with pytest.raises(InvalidArgument, match="MTU 1200 .* is below 1280"):
        driver.plan_network(overlay(mtu=1200), [], host=None)


def test_desired_tables_skip_this_host_and_settle_a_contested_mac_deterministically():
    driver = OverlayDriver(vtep="198.18.0.1")
    peers = [
        Peer("02:42:0A:00:00:02", "198.18.0.2", ("10.0.0.2/24", "fd00::2/64")),
        Peer("02:42:0a:00:00:05", "198.18.0.1", ("10.0.0.5/24",)),  # ours: reached through the bridge
        Peer("02:42:0a:00:00:03", "198.18.0.9", ("10.0.0.3/24",)),
        Peer("02:42:0a:00:00:03", "198.18.0.3", ("10.0.0.3/24",)),  # the same MAC claimed twice
    ]
    tables = driver.desired_tables(peers)
    assert tables.fdb == {"02:42:0a:00:00:02": ["198.18.0.2"], "02:42:0a:00:00:03": ["198.18.0.3"]}
    assert tables.neighbours == {"10.0.0.2": "02:42:0a:00:00:02", "fd00::2": "02:42:0a:00:00:02",
                                 "10.0.0.3": "02:42:0a:00:00:03"}
    assert driver.desired_tables(reversed(peers)) == tables  # order of the store does not matter


def test_store_keys_sort_like_the_numbers_they_hold():
    assert Keys.vni(256) < Keys.vni(4096) < Keys.vni((1 << 24) - 1)
    assert Keys.address("n", 4, 0x0A000009) < Keys.address("n", 4, 0x0A00000A) < Keys.address("n", 4, 0x0A000100)
    assert Keys.addresses_in("n", 4) != Keys.addresses_in("n", 6)  # ::a00:5 and 10.0.0.5 never meet
    assert prefix_end("/netctl/v1/peers/") == "/netctl/v1/peers0"
    with pytest.raises(InvalidArgument, match="must be non-empty and contain no '/'"):
        Keys.network_name("a/b")


def test_store_addresses_parse_in_every_form():
    assert parse_url("etcd://[fd00::1]:2400") == ("http://[fd00::1]:2400", "fd00::1", 2400)
    assert parse_url("http://etcd.example:2379/")[0] == "http://etcd.example:2379"
    for bad in ("ftp://x", "etcd://:2379", "etcd://host:port", "etcd://h:1/v3"):
        with pytest.raises(InvalidArgument):
            parse_url(bad)


def test_global_pool_hands_out_round_robin_and_wraps():
    pool = _GlobalPool.of(PoolConfig("10.9.0.0/29", "10.9.0.1"))  # dynamic range .1-.6
    held = {0x0A090001: {"owner": "gateway:x"}, 0x0A090003: {"owner": "e"}}
    assert pool.next_free(held, cursor=None) == 0x0A090002
    assert pool.next_free(held, cursor=0x0A090003) == 0x0A090004
    assert pool.next_free(held, cursor=0x0A090006) == 0x0A090002  # past the end: wrap around
    full = {0x0A090000 + i: {"owner": f"e{i}"} for i in range(1, 7)}
    assert pool.next_free(full, cursor=None) is None
    assert (pool.used(held), pool.free(held), pool.format(0x0A090002)) == (1, 4, "10.9.0.2/29")


def test_a_failing_fast_path_step_never_fails_the_operation_and_is_logged_once_per_kind(tmp_path, monkeypatch,
                                                                                           caplog):
    import contextlib
    import errno
    import logging

    from drivers import overlay as overlay_module
    from drivers.overlay_fastpath import FastPathUnavailable
    from libnetwork.errors import KernelError

    monkeypatch.setattr(overlay_module.netns, "entered", lambda path: contextlib.nullcontext())
    monkeypatch.setattr(overlay_module, "_logged_once", set())
    driver = OverlayDriver(root=str(tmp_path))

    def failing(error: Exception):
        def step(fastpath):
            raise error
        return step

    caplog.set_level(logging.INFO, logger="drivers.overlay")
    for error in (FastPathUnavailable("no tcx here"), FastPathUnavailable("no tcx here"),
                  OSError(errno.ENOSPC, "map full"), KernelError("veth gone"), OSError(errno.ENOSPC, "map full")):
        driver._fast_path("/run/netctl/overlay/x", "adding ny1", failing(error))
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [("INFO", "overlay: no tcx here"),
                    ("WARNING", "overlay fast path: adding ny1 failed ([Errno 28] map full); the bridge carries those frames")]
    with pytest.raises(ValueError):  # a bug of ours is not swallowed
        driver._fast_path("/run/netctl/overlay/x", "adding ny1", failing(ValueError("bug")))
