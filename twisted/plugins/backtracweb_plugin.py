"""twistd plugin: C{twistd backtracweb -c FILE}.  Imports nothing until used."""

from twisted.application.service import ServiceMaker

backtracweb = ServiceMaker(
    "backtracweb",
    "backtracweb.tap",
    "Serve a Django or WSGI site and its static files from one INI file.",
    "backtracweb",
)
