"""
backtracweb: serve a Django or any WSGI site under Twisted, from one INI file.

Start it with C{twistd backtracweb -c /etc/backtrac.ini}; check a file with
C{backtracweb check -c FILE}.
"""

__version__ = "0.1.0"
