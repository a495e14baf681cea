"""
The application the HTTP conformance cases (tests/http_cases.py) run against.

For any path it answers 200 OK with a JSON object saying what the server
handed it: the request line as WSGI variables, the Host, the server name
and port, CONTENT_LENGTH, the body read from wsgi.input (decoded latin-1,
so that every byte shows) and every HTTP_* variable.

A path starting with /nobody is answered without reading wsgi.input (its
body is reported as null): the server must then not send "100 Continue"
for an Expect: 100-continue request, since nobody asked for the body.
"""

import json


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/nobody"):
        body = None
    else:
        body = environ["wsgi.input"].read().decode("latin-1")
    report = {
        "method": environ.get("REQUEST_METHOD"),
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "protocol": environ.get("SERVER_PROTOCOL"),
        "host": environ.get("HTTP_HOST"),
        "server_name": environ.get("SERVER_NAME"),
        "server_port": environ.get("SERVER_PORT"),
        "content_length": environ.get("CONTENT_LENGTH") or "",
        "body": body,
        "headers": {key: value for key, value in environ.items() if key.startswith("HTTP_")},
    }
    data = json.dumps(report, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
