"""netctl's CNI plugins: netctl-bridge, netctl-ipam, netctl-null (README.md here says how to use them).

launch.py   what every plugin executable runs first (VERSION, the service client, the in-process run)
plugins.py  the plugins by name, and one in-process invocation of one of them
skel.py     the protocol: environment, stdin, versions, result shapes, error objects
config.py   typed access to configurations; requested addresses, MAC, ports, aliases
bridge.py, ipam.py, null.py   the plugins
delegate.py exec'ing delegated IPAM plugins; kernel.py the plugins' own kernel steps
service.py  the CNI service (the plugins' code kept warm in the agent); install.py writes the executables

Nothing is imported here: a plugin's start-up must not pay for what its request does not need. The
VERSION answer lives here, in the one module every plugin executable loads anyway: the launcher and
the protocol (skel.py) both use it, and neither may import the other.
"""

SUPPORTED = b'["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]'


def version_reply(stdin: bytes) -> bytes:
    """Spec §5: VERSION's cniVersion echoes the request's when supported, else the newest. Found by a
    byte scan of `"cniVersion": "X"`: parsing JSON here would cost more than the whole answer."""
    version = b"1.1.0"
    at = stdin.find(b'"cniVersion"')
    if at >= 0:
        rest = stdin[at + 12 :].lstrip()
        if rest.startswith(b":"):
            rest = rest[1:].lstrip()
            if rest.startswith(b'"'):
                asked = rest[1 : rest.find(b'"', 1)]
                if b'"' + asked + b'"' in SUPPORTED:
                    version = asked
    return b'{"cniVersion":"' + version + b'","supportedVersions":' + SUPPORTED + b"}"

