"""Bad input: one clear line on stderr, a non-zero exit, and the store and the kernel unchanged."""

import pytest

pytestmark = pytest.mark.kernel

LONG = "n" * 65

# (id, argv, words the message must contain)
CASES = [
    ("name-too-long", ["network", "create", LONG], ["invalid network name"]),
    ("name-with-slash", ["network", "create", "a/b"], ["invalid network name"]),
    ("name-shell-meta", ["network", "create", "a;rm -rf"], ["invalid network name"]),
    ("name-dollar", ["network", "create", "$(reboot)"], ["invalid network name"]),
    ("empty-name", ["network", "create", ""], ["invalid network name"]),
    ("bridge-name-too-long", ["network", "create", "-o", "bridge=averyveryverylongbr", "x"], ["not a valid interface name"]),
    ("bridge-name-slash", ["network", "create", "-o", "bridge=br/0", "x"], ["not a valid interface name"]),
    ("cidr-bad-prefix", ["network", "create", "--subnet", "10.90.0.0/33", "x"], ["10.90.0.0/33"]),
    ("cidr-garbage", ["network", "create", "--subnet", "banana", "x"], ["banana"]),
    ("cidr-host-bits", ["network", "create", "--subnet", "10.90.0.5/24", "x"], ["10.90.0.0/24"]),
    ("gateway-outside", ["network", "create", "--subnet", "10.90.0.0/24", "--gateway", "10.91.0.1", "x"], ["10.91.0.1"]),
    ("gateway-is-network-address", ["network", "create", "--subnet", "10.90.0.0/24", "--gateway", "10.90.0.0", "x"], ["10.90.0.0"]),
    ("ip-range-outside", ["network", "create", "--subnet", "10.90.0.0/24", "--ip-range", "10.92.0.0/28", "x"], ["10.92.0.0/28"]),
    ("aux-outside", ["network", "create", "--subnet", "10.90.0.0/24", "--aux-address", "p=10.93.0.1", "x"], ["10.93.0.1"]),
    ("gateway-without-subnet", ["network", "create", "--gateway", "10.90.0.1", "x"], ["--subnet"]),
    ("unknown-driver", ["network", "create", "-d", "macvlan9", "x"], ["unknown network driver", "macvlan9"]),
    ("unknown-option", ["network", "create", "-o", "colour=blue", "x"], ["unknown option", "colour"]),
    ("bad-bool-option", ["network", "create", "-o", "icc=maybe", "x"], ["icc"]),
    ("option-without-value", ["network", "create", "-o", "icc", "x"], ["KEY=VALUE"]),
    ("mtu-out-of-range", ["network", "create", "--mtu", "10", "x"], ["MTU"]),
    ("null-with-subnet", ["network", "create", "-d", "null", "--subnet", "10.94.0.0/24", "x"], ["null"]),
    ("duplicate-name", ["network", "create", "blue"], ["already used"]),
    ("overlap-existing", ["network", "create", "--subnet", "10.80.0.0/16", "x"], ["blue", "10.80.0.0/24"]),
    ("rm-with-endpoints", ["network", "rm", "blue"], ["active endpoints", "a"]),
    ("rm-unknown", ["network", "rm", "nosuchnet"], ["not found"]),
    ("connect-unknown-network", ["network", "connect", "nosuchnet", "a"], ["not found"]),
    ("connect-unknown-sandbox", ["network", "connect", "blue", "ghost"], ["not found"]),
    ("connect-twice", ["network", "connect", "blue", "a"], ["already connected"]),
    ("ip-outside-subnet", ["network", "connect", "--ip", "10.99.0.5", "blue", "lonely"], ["10.99.0.5"]),
    ("ip-taken-by-gateway", ["network", "connect", "--ip", "10.80.0.1", "blue", "lonely"], ["10.80.0.1"]),
    ("ip-not-an-address", ["network", "connect", "--ip", "10.80.0.300", "blue", "lonely"], ["10.80.0.300"]),
    ("port-out-of-range", ["network", "connect", "-p", "70000:80", "blue", "lonely"], ["70000"]),
    ("port-bad-protocol", ["network", "connect", "-p", "80:80/sctp9", "blue", "lonely"], ["protocol"]),
    ("port-taken", ["network", "connect", "-p", "8080:81", "blue", "lonely"], ["8080"]),
    ("disconnect-not-connected", ["network", "disconnect", "blue", "lonely"], ["not connected"]),
    ("sandbox-duplicate", ["sandbox", "create", "--name", "a"], ["already used"]),
    ("sandbox-bad-name", ["sandbox", "create", "--name", "../../etc"], ["invalid sandbox name"]),
    ("label-without-equals", ["network", "create", "--label", "team", "x"], ["KEY=VALUE"]),
    ("unknown-flag", ["network", "create", "--frobnicate", "x"], ["--frobnicate"]),
]


@pytest.fixture
def populated(lab):
    """A network with a connected sandbox holding a published port, and a spare sandbox."""
    lab.network("blue", "--subnet", "10.80.0.0/24")
    lab.sandbox("a")
    lab.sandbox("lonely")
    lab.connect("blue", "a", "-p", "8080:80")
    return lab


@pytest.mark.parametrize("argv,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_one_line_and_changes_nothing(populated, argv, words):
    before = populated.host.snapshot()
    result = populated.netctl(*argv, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""
    assert populated.host.snapshot() == before


def test_at_least_twenty_cases():
    assert len(CASES) >= 20
