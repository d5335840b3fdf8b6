"""The Docker Engine API, served by the host agent on a Unix socket (ROOT/docker.sock or
--docker-socket PATH), over the same library and runner the CLI uses.

server.py (socket, HTTP, peer credentials) -> routing.py (version prefix, ROUTES of each module) ->
handlers in system, networks, volumes, images, containers, exec, with api.py's context and http.py's
request/reply types. Imports nothing at package import: the agent imports it only when it serves.
"""
