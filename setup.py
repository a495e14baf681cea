"""Packaging for backtracweb; `pip install .` makes `twistd backtracweb` available."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "backtracweb/__init__.py").read_text()).group(1)

setup(
    name="backtracweb",
    version=VERSION,
    description="Serve a Django or any WSGI site under Twisted, configured by one INI file.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # twisted/plugins is a namespace drop-in directory shared with Twisted
    # and other projects: it must never get an __init__.py of ours.
    packages=["backtracweb", "backtracweb.config", "backtracweb.http", "backtracweb.app",
              "backtracweb.process", "twisted.plugins"],
    package_data={"twisted.plugins": ["backtracweb_plugin.py"]},
    # httptools: llhttp, the HTTP/1.1 parser the engine (backtracweb/http/) is built on.
    install_requires=["twisted>=23.8", "django>=4.2", "configobj>=5.0.9", "httptools>=0.6.4",
                      "websockets>=13.0"],
    extras_require={
        # TLS endpoints (listen = ssl:...) need pyOpenSSL, through Twisted's extra.
        "tls": ["twisted[tls]"],
        # playwright drives Debian's /usr/bin/chromium (no browser download);
        # build makes the sdist and wheel the packaging test installs.
        # hypothesis: the HTTP engine's property-based fuzz test.
        # channels: the demo's WebSocket consumer, driven by Chromium through nginx;
        # wsproto: the tests' WebSocket client, framing by another library than ours.
        "test": ["pytest>=7", "twisted[tls]", "playwright", "build", "hypothesis", "channels",
                 "wsproto"],
    },
    entry_points={"console_scripts": ["backtracweb = backtracweb.cli:main"]},
    # Samples for packagers: etc/X is installed as share/backtracweb/X (every
    # file of etc/, which tests/test_packaging.py checks), and MANIFEST.in
    # puts them in the sdist.
    data_files=[
        ("share/backtracweb", ["etc/backtrac.ini"]),
        ("share/backtracweb/systemd", ["etc/systemd/backtracweb.service",
                                       "etc/systemd/backtracweb.socket"]),
        ("share/backtracweb/logrotate.d", ["etc/logrotate.d/backtracweb"]),
        ("share/backtracweb/nginx", ["etc/nginx/backtracweb.conf"]),
    ],
    classifiers=[
        "Framework :: Django",
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
