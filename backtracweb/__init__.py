"""
backtracweb: serve a Django or any WSGI site under Twisted, from one INI file.

Start it with C{twistd backtracweb -c /etc/backtrac.ini}; check a file with
C{backtracweb check -c FILE}.
"""

__version__ = "0.1.0"


def version_line() -> str:
    """backtracweb's version, and those of what it runs on, in one line."""
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"backtracweb {__version__} (Twisted {version('twisted')}, "
            f"Django {version('django')}, Python {platform.python_version()})")
