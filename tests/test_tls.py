"""
Certificates renewed on SIGHUP (L{backtracweb.process.tls}): the context in force
for new connections, swapped only for files that can serve.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from certificates import self_signed_certificate
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

from backtracweb.process.tls import RenewableContext, UnusableCertificate, make_renewable
from backtracweb.twisted_internals import ssl_context_factory


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, str]:
    (tmp_path / "a").mkdir()
    key, cert = self_signed_certificate(tmp_path / "a")
    return key, cert, f"ssl:8443:privateKey={key}:certKey={cert}"


def renew_with(tmp_path: Path, key: Path, cert: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    new_key, new_cert = self_signed_certificate(tmp_path / name)
    key.write_bytes(new_key.read_bytes())
    cert.write_bytes(new_cert.read_bytes())


def test_the_endpoint_listens_with_the_renewable_context(files):
    reactor = MemoryReactor()
    endpoint = serverFromString(reactor, files[2])
    renewable = make_renewable(endpoint, files[2], reactor)
    endpoint.listen(object())
    assert reactor.sslServers[0][2] is renewable


def test_unchanged_files_change_nothing(files):
    reactor = MemoryReactor()
    renewable = RenewableContext(files[2], ssl_context_factory(serverFromString(reactor, files[2])),
                                 reactor)
    before = renewable.getContext()
    assert renewable.renew() is None
    assert renewable.getContext() is before


def test_renewed_files_serve_new_connections(files, tmp_path: Path):
    key, cert, description = files
    reactor = MemoryReactor()
    renewable = RenewableContext(description,
                                 ssl_context_factory(serverFromString(reactor, description)), reactor)
    before = renewable.getContext()
    renew_with(tmp_path, key, cert, "b")
    assert renewable.renew() == ("TLS on ssl:8443: new certificate and key loaded "
                                 "for new connections")
    assert renewable.getContext() is not before


@pytest.mark.parametrize("damage", ["half a certificate", "another key", "no key"])
def test_files_that_cannot_serve_leave_the_old_context(files, tmp_path: Path, damage: str):
    key, cert, description = files
    reactor = MemoryReactor()
    renewable = RenewableContext(description,
                                 ssl_context_factory(serverFromString(reactor, description)), reactor)
    before = renewable.getContext()
    if damage == "half a certificate":
        cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    elif damage == "another key":  # the certificate does not match it
        (tmp_path / "other").mkdir()
        other_key, _ = self_signed_certificate(tmp_path / "other")
        key.write_bytes(other_key.read_bytes())
    else:
        key.unlink()
    with pytest.raises(UnusableCertificate) as raised:
        renewable.renew()
    assert str(raised.value).startswith(f"TLS on ssl:8443: cannot use the files now "
                                        f"at {key}, {cert} (")
    assert str(raised.value).endswith("); still serving the certificate loaded before")
    assert renewable.getContext() is before
