"""
Unit tests for L{backtracweb.app.proxy}: which peers are trusted, and who the
client is when a trusted proxy says so in C{X-Forwarded-For} or RFC 7239
C{Forwarded}; plus the same rules applied by the site to each request.

No reactor runs: requests are parsed by a real channel from bytes written
to a L{StringTransport}, with a L{Clock} as the site's reactor.
"""

from __future__ import annotations

import pytest
from helpers import Client, make_site
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from backtracweb.app.proxy import Addresses, Forwarded, TrustedProxies, parse_networks
from backtracweb.app.website import BacktracSite

PROXIES = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
"""Proxies as an admin might list them: a private block and one address."""


def xff(value: str, **more: str) -> dict[str, str]:
    """Headers with C{X-Forwarded-For} and any other forwarding headers."""
    headers = {"x-forwarded-for": value}
    headers.update({name.replace("_", "-"): v for name, v in more.items()})
    return headers


# -- Addresses ---------------------------------------------------------------------


class TestAddresses:
    @pytest.mark.parametrize(
        "address, inside",
        [
            ("10.0.0.1", True),
            ("10.255.255.255", True),
            ("11.0.0.1", False),
            ("192.0.2.1", True),
            ("192.0.2.2", False),
            ("2001:db8::5", True),
            ("2001:db9::5", False),
            ("::ffff:10.1.2.3", True),
            ("::ffff:11.1.2.3", False),
            ("unix", False),
            ("", False),
            ("not-an-address", False),
            ("10.0.0.1:80", False),
        ],
    )
    def test_membership(self, address, inside):
        """
        An address is in the set when it is inside one of its CIDR blocks or
        equal to a bare address; an IPv4-mapped IPv6 address counts as its
        IPv4 address; anything that is not an address is outside.
        """
        addresses = Addresses(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])
        assert (address in addresses) is inside

    def test_unix(self):
        """C{unix} in the list admits peers on unix sockets, and only then."""
        assert "unix" in Addresses(["unix"])
        assert "unix" not in Addresses(["127.0.0.1"])
        assert "127.0.0.1" not in Addresses(["unix"])

    def test_truth(self):
        """An empty set is false; a set with only C{unix} is true."""
        assert not Addresses()
        assert not TrustedProxies(())
        assert Addresses(["unix"])
        assert Addresses(["::1"])

    def test_host_bits_allowed(self):
        """A block written with host bits set (C{10.1.2.3/8}) means its network."""
        assert "10.200.0.1" in Addresses(["10.1.2.3/8"])

    def test_parse_networks_names_bad_value(self):
        """A value that is no address or block raises L{ValueError} naming it."""
        with pytest.raises(ValueError) as caught:
            parse_networks(["10.0.0.0/8", "bogus"])
        assert str(caught.value) == "bogus"

    def test_bare_address_is_single_host(self):
        """A bare address is a /32 (or /128) network."""
        [v4, v6] = parse_networks(["192.0.2.1", "::1"])
        assert (str(v4), str(v6)) == ("192.0.2.1/32", "::1/128")


# -- TrustedProxies.resolve: who may speak -----------------------------------------


class TestWhoIsBelieved:
    def test_untrusted_peer_ignored(self):
        """Forwarding headers from a peer that is not a trusted proxy are ignored."""
        assert PROXIES.resolve("203.0.113.9", xff("198.51.100.1")) is None
        assert PROXIES.resolve("203.0.113.9", {"forwarded": "for=198.51.100.1"}) is None

    def test_no_trusted_proxies(self):
        """With no trusted proxies configured nobody is believed."""
        assert TrustedProxies(()).resolve("10.0.0.1", xff("198.51.100.1")) is None

    def test_trusted_peer_without_headers(self):
        """A trusted peer that sends no forwarding header changes nothing."""
        assert PROXIES.resolve("10.0.0.1", {}) is None

    def test_trusted_peer_with_only_forwarded_proto(self):
        """
        X-Forwarded-Proto alone (a TLS-terminating proxy that does not add
        X-Forwarded-For) sets the scheme; the peer stays the client.
        """
        assert PROXIES.resolve("10.0.0.1", {"x-forwarded-proto": "https"}) == Forwarded(
            None, "https", None)

    def test_ipv4_mapped_peer_trusted(self):
        """A peer on a dual-stack socket (C{::ffff:10.0.0.1}) is trusted as C{10.0.0.1}."""
        assert PROXIES.resolve("::ffff:10.0.0.1", xff("198.51.100.1")) == Forwarded("198.51.100.1")

    def test_unix_peer(self):
        """C{unix} trusts a proxy on a unix socket; without it such a peer is not trusted."""
        assert TrustedProxies(["unix"]).resolve("unix", xff("198.51.100.1")) == Forwarded(
            "198.51.100.1"
        )
        assert TrustedProxies(["127.0.0.1"]).resolve("unix", xff("198.51.100.1")) is None


# -- X-Forwarded-For ---------------------------------------------------------------


class TestXForwardedFor:
    def test_single_hop(self):
        """One address from a trusted proxy is the client; scheme and host unknown."""
        assert PROXIES.resolve("10.0.0.1", xff("198.51.100.1")) == Forwarded("198.51.100.1")

    def test_rightmost_untrusted_hop(self):
        """
        The client is the right-most address that is not a trusted proxy:
        trusted hops nearer to us are skipped.
        """
        forwarded = PROXIES.resolve("10.0.0.1", xff("198.51.100.7, 203.0.113.5, 10.0.0.2, 192.0.2.1"))
        assert forwarded == Forwarded("203.0.113.5")

    def test_spoofed_leftmost_entries_ignored(self):
        """
        Entries the client wrote itself (left of the hop our proxy added)
        are ignored, whatever they claim, even a trusted address or garbage.
        """
        assert PROXIES.resolve("10.0.0.1", xff("127.0.0.1, 10.9.9.9, 203.0.113.5")) == Forwarded(
            "203.0.113.5"
        )
        assert PROXIES.resolve("10.0.0.1", xff("<script>, 203.0.113.5")) == Forwarded(
            "203.0.113.5"
        )

    def test_all_trusted_chain(self):
        """When every hop is a trusted proxy, the farthest (left-most) is the client."""
        assert PROXIES.resolve("10.0.0.1", xff("10.0.0.3, 10.0.0.2")) == Forwarded("10.0.0.3")

    @pytest.mark.parametrize("bad", ["bogus", "", "unknown", "203.0.113.500"])
    def test_unusable_nearest_hop(self, bad):
        """
        When the right-most untrusted hop is not an address, the client is
        not known (the peer stays the client), rather than looking further
        left; with no scheme or host either, nothing is believed.
        """
        assert PROXIES.resolve("10.0.0.1", xff(f"198.51.100.1, {bad}")) is None

    @pytest.mark.parametrize(
        "hop, client",
        [
            ("203.0.113.5:4711", "203.0.113.5"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:DB8:0::0001", "2001:db8::1"),
            (" 203.0.113.5 ", "203.0.113.5"),
        ],
    )
    def test_address_forms(self, hop, client):
        """Ports and brackets are stripped, and IPv6 addresses are normalised."""
        assert PROXIES.resolve("10.0.0.1", xff(hop)) == Forwarded(client)

    def test_unclosed_bracket(self):
        """C{[2001:db8::1} (no closing bracket) is not an address: nothing is believed."""
        assert PROXIES.resolve("10.0.0.1", xff("[2001:db8::1")) is None

    def test_proto_and_host(self):
        """
        X-Forwarded-Proto and X-Forwarded-Host from the trusted proxy give
        the scheme (lower-cased) and host the client asked for.
        """
        headers = xff("203.0.113.5", x_forwarded_proto="HTTPS", x_forwarded_host="example.com:8443")
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded(
            "203.0.113.5", "https", "example.com:8443"
        )

    def test_proto_and_host_per_hop(self):
        """
        Lists as long as X-Forwarded-For line up hop by hop: the client's
        hop gets its own proto and host, not the nearer proxy's.
        """
        headers = xff(
            "203.0.113.5, 10.0.0.2",
            x_forwarded_proto="https, http",
            x_forwarded_host="example.com, internal.lan",
        )
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5", "https", "example.com")

    def test_shorter_proto_list_uses_nearest(self):
        """
        A -Proto list shorter than X-Forwarded-For cannot be lined up; the
        nearest value (written by our trusted peer) describes the request.
        """
        headers = xff("198.51.100.1, 203.0.113.5, 10.0.0.2", x_forwarded_proto="http, https")
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5", "https")

    @pytest.mark.parametrize("proto", ["ftp", "javascript", "https://x"])
    def test_unknown_proto_ignored(self, proto):
        """A scheme other than http or https is ignored; the client is still believed."""
        headers = xff("203.0.113.5", x_forwarded_proto=proto)
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5")

    @pytest.mark.parametrize(
        "host",
        ["evil.example/path", "a b", 'ex"ample.com', "example.com:99999x", "exa\r\nmple", "@evil"],
    )
    def test_invalid_host_ignored(self, host):
        """A host that is not C{name[:port]} is ignored; the client and scheme still apply."""
        headers = xff("203.0.113.5", x_forwarded_proto="https", x_forwarded_host=host)
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5", "https")

    def test_ipv6_host_with_port(self):
        """A bracketed IPv6 host with a port is a valid host."""
        headers = xff("203.0.113.5", x_forwarded_host="[2001:db8::1]:8443")
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded(
            "203.0.113.5", None, "[2001:db8::1]:8443"
        )


# -- Forwarded (RFC 7239) ------------------------------------------------------------


class TestForwarded:
    def test_single_element(self):
        """C{for}, C{proto} and C{host} of one element are the client, scheme and host."""
        headers = {"forwarded": "for=203.0.113.5;proto=https;host=example.com"}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5", "https", "example.com")

    def test_rightmost_untrusted_element(self):
        """
        Elements run farthest to nearest; the client is the right-most one
        not naming a trusted proxy, with that element's own proto and host.
        """
        headers = {
            "forwarded": "for=198.51.100.1;proto=http, for=203.0.113.5;proto=https;host=shop.example, "
            "for=10.0.0.2;proto=http;host=internal.lan"
        }
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded(
            "203.0.113.5", "https", "shop.example"
        )

    def test_quoted_ipv6_with_port(self):
        """A quoted, bracketed IPv6 address with a port is the address."""
        headers = {"forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https'}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("2001:db8:cafe::17", "https")

    def test_quoted_separators_stay_in_value(self):
        """
        Commas and semicolons inside quotes do not split elements or pairs,
        and backslash escapes are undone.
        """
        headers = {"forwarded": 'for="198.51.100.1;x,y";host="a\\"b", for=203.0.113.5;host="example.com:8080"'}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded(
            "203.0.113.5", None, "example.com:8080"
        )

    def test_names_case_insensitive(self):
        """Parameter names and the proto value are case-insensitive."""
        headers = {"forwarded": "For=203.0.113.5;PROTO=HTTPS;Host=example.com"}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5", "https", "example.com")

    @pytest.mark.parametrize("value", ["for=unknown", "for=_hidden", 'for="_gazonk"'])
    def test_unknown_or_obfuscated_client(self, value):
        """
        C{for=unknown}, an obfuscated identifier (C{_hidden}) at the
        client's hop: no address is known, so the peer stays the client.
        """
        headers = {"forwarded": f"{value}, for=10.0.0.2"}
        assert PROXIES.resolve("10.0.0.1", headers) is None

    @pytest.mark.parametrize("value", ["for=unknown;proto=https", "proto=https"])
    def test_hidden_client_keeps_scheme(self, value):
        """
        A trusted proxy that hides the client (or names none) is still
        believed about the scheme the client used.
        """
        headers = {"forwarded": f"{value}, for=10.0.0.2"}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded(None, "https", None)

    def test_invalid_host_ignored(self):
        """An invalid C{host} is ignored while the client is believed."""
        headers = {"forwarded": 'for=203.0.113.5;host="evil.example/x"'}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5")

    def test_spoofed_leftmost_element_ignored(self):
        """Elements left of the client's hop are ignored, even when they name trusted proxies."""
        headers = {"forwarded": "for=10.0.0.9;proto=https, for=203.0.113.5"}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5")

    def test_all_trusted_chain(self):
        """When every element names a trusted proxy, the farthest is the client."""
        headers = {"forwarded": "for=10.0.0.3;proto=https, for=10.0.0.2"}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("10.0.0.3", "https")

    def test_takes_precedence_over_x_forwarded_for(self):
        """With both headers, C{Forwarded} alone is read."""
        headers = {"forwarded": "for=203.0.113.5", "x-forwarded-for": "198.51.100.1"}
        assert PROXIES.resolve("10.0.0.1", headers) == Forwarded("203.0.113.5")

    def test_untrusted_peer_ignored(self):
        """C{Forwarded} from an untrusted peer is ignored."""
        assert PROXIES.resolve("198.51.100.99", {"forwarded": "for=203.0.113.5"}) is None


# -- through the site's request ------------------------------------------------------


class ClientRecorder:
    """A root that records what each request says about its client, and answers it."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def handle(self, request) -> None:
        self.seen.append((request.client, request.secure, request.server_name,
                          request.server_port, request.peer))
        request.respond(b"ok")


def forwarding_site(trusted: tuple[str, ...]) -> tuple[BacktracSite, ClientRecorder]:
    root = ClientRecorder()
    return make_site(root, proxies=TrustedProxies(trusted)), root


def send(site: BacktracSite, peer, headers: bytes) -> bytes:
    """Send one request from C{peer}; return the raw response."""
    client = Client(site, peer=peer)
    client.send(b"GET / HTTP/1.0\r\nHost: backend:8080\r\n" + headers + b"\r\n")
    return client.output


class TestRequestForwarding:
    HEADERS = (
        b"X-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example.com\r\n"
    )

    def test_trusted_proxy(self):
        """
        Behind a trusted proxy the request's client, scheme and host are the
        ones the proxy reports; C{peer} keeps the proxy's address.
        """
        site, root = forwarding_site(("10.0.0.0/8",))
        send(site, IPv4Address("TCP", "10.0.0.1", 50000), self.HEADERS)
        assert root.seen == [("203.0.113.5", True, "www.example.com", 443, "10.0.0.1")]

    def test_untrusted_peer(self):
        """From an untrusted peer the same headers change nothing."""
        site, root = forwarding_site(("10.0.0.0/8",))
        send(site, IPv4Address("TCP", "198.51.100.66", 50000), self.HEADERS)
        assert root.seen == [("198.51.100.66", False, "backend", 8080, "198.51.100.66")]

    def test_ipv6_client(self):
        """A forwarded IPv6 client becomes the request's (IPv6) client address."""
        site, root = forwarding_site(("10.0.0.0/8",))
        send(site, IPv4Address("TCP", "10.0.0.1", 50000), b'Forwarded: for="[2001:db8::7]:1234"\r\n')
        assert root.seen[0][0] == "2001:db8::7"

    def test_ipv4_mapped_proxy(self):
        """A proxy connecting over IPv6 as C{::ffff:10.0.0.1} is trusted by C{10.0.0.0/8}."""
        site, root = forwarding_site(("10.0.0.0/8",))
        send(site, IPv6Address("TCP", "::ffff:10.0.0.1", 50000), b"X-Forwarded-For: 203.0.113.5\r\n")
        assert root.seen[0][0] == "203.0.113.5"

    def test_unix_socket_proxy(self):
        """
        A proxy on a unix socket is trusted with C{unix}; the request's peer
        is C{unix} and the client is the forwarded address.
        """
        site, root = forwarding_site(("unix",))
        send(site, UNIXAddress(None), self.HEADERS)
        assert root.seen == [("203.0.113.5", True, "www.example.com", 443, "unix")]

    def test_underscore_spoof_dropped(self):
        """
        C{X_Forwarded_For} is dropped before forwarding is resolved, so it
        cannot add a hop the trusted proxy did not write.
        """
        site, root = forwarding_site(("10.0.0.0/8",))
        send(
            site,
            IPv4Address("TCP", "10.0.0.1", 50000),
            b"X_Forwarded_For: 10.0.0.7\r\nX-Forwarded-For: 203.0.113.5\r\n",
        )
        assert root.seen[0][0] == "203.0.113.5"

    def test_no_trusted_proxies(self):
        """Without C{[proxy] trusted}, forwarding headers are ignored and the peer is the client."""
        site, root = forwarding_site(())
        send(site, IPv4Address("TCP", "10.0.0.1", 50000), self.HEADERS)
        assert root.seen == [("10.0.0.1", False, "backend", 8080, "10.0.0.1")]

    def test_trusted_peer_without_forwarding_headers(self):
        """A trusted proxy that sends no forwarding header leaves the request as it came."""
        site, root = forwarding_site(("10.0.0.0/8",))
        send(site, IPv4Address("TCP", "10.0.0.1", 50000), b"")
        assert root.seen == [("10.0.0.1", False, "backend", 8080, "10.0.0.1")]
