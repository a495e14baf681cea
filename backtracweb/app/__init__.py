"""
Serving a site in one process, on the HTTP engine (L{backtracweb.http}):
the site and its reloadable settings, routing to the status page, static
files or the WSGI application, the thread pool the application runs in,
and the access log.  Knows nothing of services, signals or processes.
"""
