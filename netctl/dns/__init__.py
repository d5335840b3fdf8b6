"""The embedded name server of the host agent (issue 14): Docker's 127.0.0.11, for every sandbox.

    service.py    the agent's service: indexer thread, control socket ROOT/dns.sock, start/stop
    source.py     what the index is built from: the store (change detection: PRAGMA data_version),
                  other hosts' endpoints (etcd), containers' --dns
    index.py      per set of networks, the names visible and the answers prepared (pure)
    wire.py       the question read by hand (measured), everything sent built by dnslib
    listeners.py  UDP+TCP sockets on 127.0.0.11:53 made inside each sandbox's namespace
    server.py     one epoll loop over all of them; TCP in a small pool
    upstream.py   forwarding of other names to the host's (or the container's) resolvers

Nothing here is imported by the CLI's or a CNI plugin's cold path: runner/hosts.py holds the small
client they use (sync_names), and the agent imports this package when it starts the service.
"""
