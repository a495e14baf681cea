"""
The processes twistd runs: the service tree built from a configuration
(L{tree}), its signals and reload (L{service}), the listening endpoints
and the web service, and with C{[server] workers} the supervisor, its
worker processes, the sockets they share and the control channel between
them.
"""
