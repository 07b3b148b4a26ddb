"""PeerPolicy: which peers a TURN allocation may relay to (RFC 8656 §21.1.4, §9, §11.2, §12)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ConfigError
from meet443.proto.turn.peer_policy import DEFAULT_DENIED_NETWORKS, PeerPolicy

PUBLIC_EXAMPLES = ["1.1.1.1", "8.8.8.8", "2001:4860:4860::8888", "2606:4700:4700::1111"]

DENIED_V4_NETWORKS = [
    ipaddress.IPv4Network(n)
    for n in DEFAULT_DENIED_NETWORKS
    if isinstance(ipaddress.ip_network(n), ipaddress.IPv4Network)
]


def _v4_is_denied(v4: ipaddress.IPv4Address) -> bool:
    return any(v4 in network for network in DENIED_V4_NETWORKS)


def _v6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def _mapped(v4: int) -> str:
    return _v6(0xFFFF_0000_0000 | v4)


def _compatible(v4: int) -> str:
    return _v6(v4)


def _translated(v4: int) -> str:
    return _v6(0xFFFF_0000_0000_0000 | v4)


def _nat64(v4: int) -> str:
    return _v6((0x0064_FF9B << 96) | v4)


def _nat64_local_48(v4: int) -> str:
    """RFC 6052 §2.2 /48 layout in 64:ff9b:1::/48: IPv4 split around the u-octet (bits 64-71)."""
    high, low = v4 >> 16, v4 & 0xFFFF
    return _v6((0x0064_FF9B_0001 << 80) | (high << 64) | (low << 40))


def _six_to_four(v4: int, tail: int = 1) -> str:
    return _v6((0x2002 << 112) | (v4 << 80) | tail)


def _teredo(server: int, client: int, flags_port: int = 0x8000_63BF) -> str:
    return _v6((0x2001_0000 << 96) | (server << 64) | (flags_port << 32) | (client ^ 0xFFFF_FFFF))


def _int(v4: str) -> int:
    return int(ipaddress.IPv4Address(v4))


def _edges(cidr: str) -> list[str]:
    network = ipaddress.ip_network(cidr)
    first, last = int(network.network_address), int(network.broadcast_address)
    cls = type(network.network_address)
    return sorted({str(cls(first)), str(cls((first + last) // 2)), str(cls(last))})


@pytest.fixture
def policy() -> PeerPolicy:
    return PeerPolicy()


class TestRfc8656Section21DefaultDenyList:
    """RFC 8656 §21.1.4: the administrator restricts the addresses the server relays to."""

    @pytest.mark.parametrize(
        "ip", [ip for cidr in DEFAULT_DENIED_NETWORKS for ip in _edges(cidr)], ids=lambda ip: ip
    )
    def test_first_middle_and_last_address_of_every_range_denied(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)
        assert not policy.relay_allowed(ip, 3478)

    @pytest.mark.parametrize(
        "ip",
        [
            "169.254.169.254",  # cloud metadata
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.100.100.200",  # Alibaba metadata, inside 100.64.0.0/10
            "192.0.0.170",
            "198.18.0.1",
            "239.255.255.250",  # SSDP
            "::",
            "::1",
            "fd00:ec2::254",  # AWS IMDS over IPv6
            "fe80::1",
            "fec0::1",  # site-local
            "feff::1",  # end of fec0::/10
            "ff02::1",
        ],
    )
    def test_well_known_targets_denied(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)

    @pytest.mark.parametrize(
        "ip",
        [
            "1.0.0.0",  # after 0.0.0.0/8
            "9.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "191.255.255.255",
            "192.0.1.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe00::",
            "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ],
    )
    def test_just_outside_a_range_allowed(self, policy: PeerPolicy, ip: str) -> None:
        assert policy.permission_allowed(ip)
        assert policy.relay_allowed(ip, 9)

    @pytest.mark.parametrize("ip", PUBLIC_EXAMPLES)
    def test_public_addresses_allowed(self, policy: PeerPolicy, ip: str) -> None:
        assert policy.permission_allowed(ip)
        assert policy.relay_allowed(ip, 1)
        assert policy.relay_allowed(ip, 65535)

    @pytest.mark.parametrize("ip", ["192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1"])
    def test_documentation_ranges_are_not_in_the_deny_list(self, policy: PeerPolicy, ip: str) -> None:
        # Decided: the deny list is exactly the required one; TEST-NETs route nowhere private.
        assert policy.permission_allowed(ip)


class TestRfc4291Section2_5_5EmbeddedIpv4:  # noqa: N801 - section numbers
    """IPv4-mapped, IPv4-compatible and IPv4-translated IPv6 forms are judged by their IPv4 address."""

    @pytest.mark.parametrize(
        "ip",
        [
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::127.0.0.1",
            "::169.254.169.254",
            "::0.0.0.2",
            "::ffff:0:127.0.0.1",
            "::ffff:0:169.254.169.254",
            "0:0:0:0:0:ffff:a9fe:a9fe",  # the same, spelt out
        ],
    )
    def test_denied_embedded_address_denies(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)
        assert not policy.relay_allowed(ip, 80)

    @pytest.mark.parametrize(
        "ip", ["::ffff:8.8.8.8", "::ffff:1.1.1.1", "::8.8.8.8", "::ffff:0:8.8.8.8", "::ffff:0:1.1.1.1"]
    )
    def test_public_embedded_address_allowed(self, policy: PeerPolicy, ip: str) -> None:
        assert policy.permission_allowed(ip)
        assert policy.relay_allowed(ip, 80)


class TestRfc6052Nat64WellKnownPrefix:
    """RFC 6052 §2.1: 64:ff9b::/96 carries the IPv4 address in its last 32 bits."""

    @pytest.mark.parametrize(
        "ip", ["64:ff9b::a9fe:a9fe", "64:ff9b::169.254.169.254", "64:ff9b::7f00:1", "64:ff9b::a00:1"]
    )
    def test_denied_embedded_address_denies(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)

    @pytest.mark.parametrize("ip", ["64:ff9b::808:808", "64:ff9b::1.1.1.1"])
    def test_public_embedded_address_allowed(self, policy: PeerPolicy, ip: str) -> None:
        assert policy.permission_allowed(ip)


class TestRfc8215LocalUseNat64Prefix:
    """RFC 8215 64:ff9b:1::/48 with the RFC 6052 §2.2 /48 layout, plus the safety readings."""

    def test_layout_helper_matches_rfc6052(self) -> None:
        # 169.254.169.254 = a9.fe.a9.fe: a9fe in bits 48-63, u-octet 00, a9fe in bits 72-87.
        assert _nat64_local_48(_int("169.254.169.254")) == "64:ff9b:1:a9fe:a9:fe00::"

    @pytest.mark.parametrize(
        "ip",
        [
            "64:ff9b:1:a9fe:a9:fe00::",  # 169.254.169.254
            "64:ff9b:1:7f00:0:100::",  # 127.0.0.1
            "64:ff9b:1:a00:0:100::",  # 10.0.0.1
            "64:ff9b:1:c0a8:1:100::",  # 192.168.1.1
            "64:ff9b:1::",  # 0.0.0.0
        ],
    )
    def test_denied_embedded_address_denies(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)

    @pytest.mark.parametrize("ip", ["64:ff9b:1:808:8:800::", "64:ff9b:1:101:1:100::"])  # 8.8.8.8, 1.1.1.1
    def test_public_embedded_address_allowed(self, policy: PeerPolicy, ip: str) -> None:
        assert policy.permission_allowed(ip)
        assert policy.relay_allowed(ip, 443)

    @pytest.mark.parametrize(
        "ip",
        [
            "64:ff9b:1:808:ff08:800::",  # u-octet (bits 64-71) not zero
            "64:ff9b:1:808:8:800::1",  # suffix (bits 88-127) not zero
            "64:ff9b:1::808:808",  # a /96 deployment's form of 8.8.8.8: the suffix is the address
        ],
    )
    def test_bits_that_do_not_parse_deny(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)

    def test_a_slash_64_deployment_cannot_smuggle_a_private_address(self, policy: PeerPolicy) -> None:
        # Behind a 64:ff9b:1:100::/64 translator this reaches 10.1.0.0 (bits 72-103); the /48
        # reading alone would see the public 1.0.10.1.
        assert not policy.permission_allowed("64:ff9b:1:100:a:100::")

    def test_allow_peer_lifts_the_prefix(self) -> None:
        policy = PeerPolicy(["64:ff9b:1::/48"])
        assert policy.permission_allowed("64:ff9b:1::808:808")
        assert policy.permission_allowed("64:ff9b:1:a9fe:a9:fe00::")


class TestRfc3056SixToFour:
    """RFC 3056 §2: 2002::/16 carries the IPv4 address in bits 16-47."""

    @pytest.mark.parametrize(
        "ip", ["2002:7f00:1::", "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:c0a8:101:1::1", "2002::"]
    )
    def test_denied_embedded_address_denies(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)

    @pytest.mark.parametrize("ip", ["2002:808:808::1", "2002:101:101:1::5"])
    def test_public_embedded_address_allowed(self, policy: PeerPolicy, ip: str) -> None:
        assert policy.permission_allowed(ip)


class TestRfc4380Teredo:
    """RFC 4380 §4: server IPv4 in bits 32-63, client IPv4 inverted in bits 96-127; both count."""

    def test_helper_matches_stdlib(self) -> None:
        address = ipaddress.IPv6Address(_teredo(_int("65.54.227.120"), _int("192.0.2.45")))
        assert address.teredo == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("192.0.2.45"))

    @pytest.mark.parametrize(
        ("server", "client"),
        [
            ("10.0.0.1", "8.8.8.8"),
            ("169.254.169.254", "8.8.8.8"),
            ("65.54.227.120", "127.0.0.1"),
            ("65.54.227.120", "169.254.169.254"),
            ("65.54.227.120", "192.168.0.10"),
            ("127.0.0.1", "127.0.0.1"),
        ],
    )
    def test_private_server_or_client_denies(self, policy: PeerPolicy, server: str, client: str) -> None:
        assert not policy.permission_allowed(_teredo(_int(server), _int(client)))

    def test_rfc4380_example_address_allowed(self, policy: PeerPolicy) -> None:
        # Server 65.54.227.120, client 192.0.2.45 (RFC 4380 §4 example; both public to us).
        assert policy.permission_allowed("2001:0:4136:e378:8000:63bf:3fff:fdd2")

    def test_client_address_is_inverted(self, policy: PeerPolicy) -> None:
        # Without the XOR the last 32 bits 80ff:fffe would read 128.255.255.254, a public address.
        assert not policy.permission_allowed("2001:0:4136:e378:8000:63bf:80ff:fffe")


class TestRfc8656Section21AllowPeer:
    """--allow-peer lifts the deny list only for the ranges it names."""

    def test_lifts_only_that_range(self) -> None:
        policy = PeerPolicy(["10.1.0.0/16"])
        assert policy.permission_allowed("10.1.0.0")
        assert policy.permission_allowed("10.1.255.255")
        assert policy.relay_allowed("10.1.2.3", 22)
        assert not policy.permission_allowed("10.2.0.1")
        assert not policy.permission_allowed("10.0.255.255")
        assert not policy.permission_allowed("127.0.0.1")
        assert not policy.permission_allowed("169.254.169.254")

    def test_lifts_the_embedded_forms_of_that_range(self) -> None:
        policy = PeerPolicy(["10.1.0.0/16"])
        assert policy.permission_allowed("::ffff:10.1.2.3")
        assert policy.permission_allowed("64:ff9b::a01:203")
        assert not policy.permission_allowed("::ffff:10.2.0.1")
        assert not policy.permission_allowed("64:ff9b::a02:1")

    def test_ipv6_range(self) -> None:
        policy = PeerPolicy(["fd00:1::/32"])
        assert policy.permission_allowed("fd00:1::5")
        assert not policy.permission_allowed("fd00:2::5")
        assert not policy.permission_allowed("fe80::1")

    def test_multiple_ranges(self) -> None:
        policy = PeerPolicy(["10.1.0.0/16", "192.168.5.0/24", "127.0.0.1"])
        assert policy.permission_allowed("10.1.9.9")
        assert policy.permission_allowed("192.168.5.7")
        assert policy.permission_allowed("127.0.0.1")
        assert not policy.permission_allowed("127.0.0.2")
        assert not policy.permission_allowed("192.168.6.7")

    @pytest.mark.parametrize(
        "cidr", ["not-a-cidr", "10.0.0.0/33", "10.1.2.3/16", "", "fd00::/129", "1.2.3.4/8", "10.0.0.0/8/8"]
    )
    def test_bad_cidr_is_a_config_error(self, cidr: str) -> None:
        with pytest.raises(ConfigError):
            PeerPolicy([cidr])

    def test_a_lone_string_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError):
            PeerPolicy("10.0.0.0/8")


class TestRfc8656Section9OwnAddresses:
    """Permissions are per IP (§9); the ports of the server's own addresses are checked per datagram."""

    @pytest.fixture
    def own(self) -> PeerPolicy:
        return PeerPolicy(
            server_addresses=["10.0.0.5", "203.0.113.10", "2001:db8::5"],
            main_port=3478,
            relay_ports=(49152, 65535),
        )

    @pytest.mark.parametrize("ip", ["10.0.0.5", "203.0.113.10", "2001:db8::5", "2001:0db8:0:0::5"])
    def test_permission_allowed_even_when_private(self, own: PeerPolicy, ip: str) -> None:
        assert own.permission_allowed(ip)

    @pytest.mark.parametrize("port", [3478, 49152, 50000, 65535])
    @pytest.mark.parametrize("ip", ["10.0.0.5", "203.0.113.10", "2001:db8::5"])
    def test_relay_and_main_ports_allowed(self, own: PeerPolicy, ip: str, port: int) -> None:
        assert own.relay_allowed(ip, port)

    @pytest.mark.parametrize("port", [0, 22, 53, 443, 3477, 3479, 8080, 49151, 65536, -1])
    @pytest.mark.parametrize("ip", ["10.0.0.5", "203.0.113.10", "2001:db8::5"])
    def test_other_ports_refused(self, own: PeerPolicy, ip: str, port: int) -> None:
        assert not own.relay_allowed(ip, port)

    def test_other_private_addresses_still_denied(self, own: PeerPolicy) -> None:
        assert not own.permission_allowed("10.0.0.6")
        assert not own.relay_allowed("10.0.0.6", 50000)

    def test_other_public_addresses_any_port(self, own: PeerPolicy) -> None:
        assert own.relay_allowed("203.0.113.11", 22)
        assert own.relay_allowed("8.8.8.8", 53)

    @pytest.mark.parametrize("ip", ["::ffff:203.0.113.10", "64:ff9b::cb00:710a", "::ffff:10.0.0.5"])
    def test_embedded_forms_of_own_address_keep_the_port_rule(self, own: PeerPolicy, ip: str) -> None:
        assert own.permission_allowed(ip)
        assert own.relay_allowed(ip, 50000)
        assert not own.relay_allowed(ip, 22)

    def test_teredo_with_own_server_and_private_client_denied(self, own: PeerPolicy) -> None:
        assert not own.permission_allowed(_teredo(_int("203.0.113.10"), _int("127.0.0.1")))

    def test_no_main_port_means_no_port_zero(self) -> None:
        policy = PeerPolicy(server_addresses=["10.0.0.5"])
        assert not policy.relay_allowed("10.0.0.5", 0)
        assert policy.relay_allowed("10.0.0.5", 49152)

    def test_a_server_port_allowed_later_is_reachable(self) -> None:
        """The second UDP port (the SFU for browsers) is bound after the policy is built."""
        policy = PeerPolicy(server_addresses=["10.0.0.5"], main_port=443)
        assert not policy.relay_allowed("10.0.0.5", 3478)
        policy.allow_server_port(3478)
        assert policy.relay_allowed("10.0.0.5", 3478)
        assert not policy.relay_allowed("10.0.0.5", 3479)
        assert not policy.relay_allowed("10.0.0.6", 3478)  # private, and not ours
        with pytest.raises(ConfigError):
            policy.allow_server_port(0)

    def test_mapped_server_address_is_normalised(self) -> None:
        policy = PeerPolicy(server_addresses=["::ffff:10.0.0.5"], main_port=3478)
        assert policy.relay_allowed("10.0.0.5", 3478)
        assert not policy.relay_allowed("10.0.0.5", 22)

    @pytest.mark.parametrize(
        "address", ["0.0.0.0", "::", "::ffff:0.0.0.0", "server", "fe80::1%eth0", "10.0.0.0/8"]
    )
    def test_bad_server_address_is_a_config_error(self, address: str) -> None:
        with pytest.raises(ConfigError):
            PeerPolicy(server_addresses=[address])

    @pytest.mark.parametrize(
        ("main_port", "relay_ports"),
        [(-1, (49152, 65535)), (65536, (49152, 65535)), (0, (0, 100)), (0, (50000, 40000)), (0, (1, 65536))],
    )
    def test_bad_ports_are_a_config_error(self, main_port: int, relay_ports: tuple[int, int]) -> None:
        with pytest.raises(ConfigError):
            PeerPolicy(main_port=main_port, relay_ports=relay_ports)


class TestInvalidInput:
    """Both queries refuse what does not parse and never raise."""

    @pytest.mark.parametrize(
        "ip",
        [
            "",
            "localhost",
            "1.2.3",
            "1.2.3.4.5",
            "010.0.0.1",  # leading zeros: octal to some parsers
            "0x7f.0.0.1",
            "2130706433",  # 127.0.0.1 as an integer
            " 8.8.8.8",
            "8.8.8.8 ",
            "[::1]",
            "8.8.8.8:53",
            "::ffff:8.8.8.8.8",
            "fe80::1%eth0",
            "2001:4860:4860::8888%1",  # a zone is refused even on a public address
            "\x00",
            "é",
        ],
    )
    def test_refused(self, policy: PeerPolicy, ip: str) -> None:
        assert not policy.permission_allowed(ip)
        assert not policy.relay_allowed(ip, 3478)


class TestDecisionCache:
    """relay_allowed is on the per-packet path: a repeated IP must not be parsed again."""

    def test_repeated_ip_parsed_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[str] = []
        real = ipaddress.ip_address

        def counting(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
            calls.append(text)
            return real(text)

        policy = PeerPolicy(server_addresses=["10.0.0.5"])
        monkeypatch.setattr(ipaddress, "ip_address", counting)
        for port in range(1000):
            policy.relay_allowed("8.8.8.8", port)
            policy.relay_allowed("10.0.0.5", port)
            policy.permission_allowed("10.9.9.9")
        assert calls == ["8.8.8.8", "10.0.0.5", "10.9.9.9"]

    def test_cache_is_bounded_and_decisions_survive_eviction(self, policy: PeerPolicy) -> None:
        for i in range(10_000):
            ip = str(ipaddress.IPv4Address(0x0A00_0000 + i))  # 10.0.0.0 onwards, all denied
            assert not policy.relay_allowed(ip, 50000)
        assert len(policy._cache) <= 4096
        assert not policy.relay_allowed("10.0.0.0", 50000)  # evicted, decided again
        assert policy.relay_allowed("8.8.8.8", 50000)


# -- properties --------------------------------------------------------------------------------

_denied_v4 = st.sampled_from(DENIED_V4_NETWORKS).flatmap(
    lambda n: st.integers(int(n.network_address), int(n.broadcast_address))
)
# Built, not filtered: hypothesis favours small integers (0.x.x.x, denied). First octets that are
# partly denied (100, 169, 172, 192, 198) are left out.
_PUBLIC_FIRST_OCTETS = [o for o in range(1, 224) if o not in (10, 100, 127, 169, 172, 192, 198)]
_public_v4 = st.tuples(st.sampled_from(_PUBLIC_FIRST_OCTETS), st.integers(0, 2**24 - 1)).map(
    lambda t: (t[0] << 24) | t[1]
)
_ports = st.integers(-(2**20), 2**20)


class TestProperties:
    @given(ip=st.text(), port=_ports)
    def test_never_raises_on_any_string(self, ip: str, port: int) -> None:
        policy = PeerPolicy(["10.1.0.0/16"], server_addresses=["10.0.0.5"], main_port=3478)
        assert isinstance(policy.relay_allowed(ip, port), bool)
        assert isinstance(policy.permission_allowed(ip), bool)

    @given(value=st.integers(0, 2**128 - 1), port=_ports)
    def test_never_raises_on_any_ipv6_and_relay_agrees_with_permission(self, value: int, port: int) -> None:
        policy = PeerPolicy()
        ip = _v6(value)
        assert policy.relay_allowed(ip, port) == policy.permission_allowed(ip)

    @given(value=st.integers(0, 2**32 - 1), port=_ports)
    def test_ipv4_decision_matches_the_deny_list(self, value: int, port: int) -> None:
        v4 = ipaddress.IPv4Address(value)
        assert PeerPolicy().relay_allowed(str(v4), port) is not _v4_is_denied(v4)

    @given(v4=_denied_v4, tail=st.integers(0, 2**80 - 1), other=st.integers(0, 2**32 - 1), port=_ports)
    def test_denied_ipv4_is_denied_in_every_embedded_form(
        self, v4: int, tail: int, other: int, port: int
    ) -> None:
        policy = PeerPolicy()
        forms = [
            str(ipaddress.IPv4Address(v4)),
            _mapped(v4),
            _compatible(v4),
            _translated(v4),
            _nat64(v4),
            _nat64_local_48(v4),
            _six_to_four(v4, tail),
            _teredo(v4, other),
            _teredo(other, v4),
        ]
        for form in forms:
            assert not policy.permission_allowed(form), form
            assert not policy.relay_allowed(form, port), form

    @given(v4=_public_v4, tail=st.integers(0, 2**80 - 1), port=_ports)
    def test_public_ipv4_is_allowed_in_its_embedded_forms(self, v4: int, tail: int, port: int) -> None:
        policy = PeerPolicy()
        forms = [_mapped(v4), _compatible(v4), _translated(v4), _nat64(v4), _six_to_four(v4, tail)]
        for form in forms:
            assert policy.relay_allowed(form, port), form

    @given(v4=_public_v4)
    def test_local_nat64_allowed_only_when_every_reading_is_public(self, v4: int) -> None:
        ip = _nat64_local_48(v4)
        value = int(ipaddress.IPv6Address(ip))
        readings = [
            v4,
            (((value >> 64) & 0xFF) << 24) | ((value >> 32) & 0xFF_FFFF),
            (value >> 24) & 0xFFFF_FFFF,
        ]
        expected = not any(_v4_is_denied(ipaddress.IPv4Address(r)) for r in readings)
        assert PeerPolicy().permission_allowed(ip) is expected

    @given(v4=_public_v4, other=_public_v4)
    def test_teredo_with_two_public_addresses_allowed(self, v4: int, other: int) -> None:
        assert PeerPolicy().permission_allowed(_teredo(v4, other))


class TestClusterNodes:
    """docs/cluster.md "TURN across nodes": other live nodes' SFU ports and relay ranges only."""

    def test_other_nodes_media_ports_and_nothing_else(self) -> None:
        policy = PeerPolicy(server_addresses=["10.200.120.1"], main_port=443, relay_ports=(50000, 50100))
        assert not policy.permission_allowed("10.200.120.2")
        policy.set_cluster_nodes([(["10.200.120.2", "not an ip"], [443, 3478], (51000, 51100))])
        assert policy.permission_allowed("10.200.120.2")
        assert policy.relay_allowed("10.200.120.2", 443)
        assert policy.relay_allowed("10.200.120.2", 3478)
        assert policy.relay_allowed("10.200.120.2", 51050)
        assert not policy.relay_allowed("10.200.120.2", 22)  # its SSH, its Redis: no
        assert not policy.relay_allowed("10.200.120.2", 50050)  # our relay range is not its
        assert not policy.relay_allowed("10.200.120.3", 443)
        # A node gone from the registry is a private address again.
        policy.set_cluster_nodes([])
        assert not policy.relay_allowed("10.200.120.2", 443)
        assert not policy.permission_allowed("10.200.120.2")
