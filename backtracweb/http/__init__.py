"""
The HTTP/1.1 engine: the wire protocol between a client and the site.

Twisted stays the server (reactor, endpoints, TLS, services, logging);
this package replaces only Twisted's HTTP/1.1 channel and request, whose
pure-Python parser is lenient where leniency lets a client smuggle a
request, and slow.  Heads and chunked bodies are parsed by llhttp, Node's
HTTP parser, through C{httptools}; what llhttp leaves to its user (Host,
the request target, transfer codings, connection management, limits) is
checked here, as RFC 9112 and RFC 9110 say.

Modules, each importing only those listed before it:

  - L{errors}: a request refused with a status, and why;
  - L{head}: pure checks of a parsed head (target, Host, framing, version);
  - L{body}: the request body as the application reads it;
  - L{transport}: what the engine needs of Twisted's transports beyond
    their interfaces (private attributes, in one place);
  - L{request}: one request and its response;
  - L{channel}: one connection: parsing, pipelining, deadlines, flow control.

Nothing here knows about WSGI, static files or configuration files: the
channel hands each request to its site's C{handle} and reports back.
"""
