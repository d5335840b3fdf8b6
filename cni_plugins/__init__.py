"""netctl's CNI plugins: netctl-bridge, netctl-ipam, netctl-null (README.md here says how to use them).

launch.py   what every plugin executable runs first (VERSION, the service client, the in-process run)
skel.py     the protocol: environment, stdin, versions, result shapes, error objects
config.py   typed access to configurations; requested addresses, MAC, ports, aliases
bridge.py, ipam.py, null.py   the plugins
delegate.py exec'ing delegated IPAM plugins; kernel.py the plugins' own kernel steps
server.py   the CNI service (the plugins' code kept warm); install.py writes the executables

Nothing is imported here: a plugin's start-up must not pay for what its request does not need.
"""
