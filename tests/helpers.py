"""
Building blocks the unit tests share.  (Not a conftest: the end-to-end
tests have a conftest of their own, and both would be imported as
"conftest".)
"""

from __future__ import annotations

from backtracweb.accesslog import AccessLog
from backtracweb.proxy import Addresses, TrustedProxies
from backtracweb.website import SiteSettings


def site_settings(**overrides) -> SiteSettings:
    """
    Site settings for tests: no static routes, access log and status page
    off, no trusted proxy, small limits; C{overrides} replace any of them.
    """
    values = dict(
        routes=(),
        access_log=AccessLog("off").open(),
        proxies=TrustedProxies(()),
        max_body=1024,
        max_header_bytes=8192,
        max_headers=50,
        idle_timeout=60.0,
        max_queue=10,
        status_path=None,
        status_allow=Addresses(()),
        graceful_timeout=30.0,
        config_file="/etc/backtrac.ini",
        loaded_at=0.0,
    )
    values.update(overrides)
    return SiteSettings(**values)
