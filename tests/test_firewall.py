"""``meet443 firewall-rules``: the network description, the rules and their four formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from meet443.cli import main
from meet443.config import load_serve_config
from meet443.firewall import outbound_rules, render
from meet443.network import NetworkDescription

NETWORK = NetworkDescription.single_node(
    "https://meet.example.org", ["203.0.113.5", "2001:db8::5"], 443, (49152, 65535)
)


class TestNetworkDescription:
    def test_json_round_trip(self) -> None:
        document = NETWORK.to_json()
        assert NetworkDescription.from_json(json.loads(json.dumps(document))) == NETWORK
        assert document["hostnames"] == ["meet.example.org"]
        (node,) = document["nodes"]
        assert node == {
            "name": "meet.example.org",
            "self": True,
            "hostnames": ["meet.example.org"],
            "addresses": ["203.0.113.5", "2001:db8::5"],
            "tcpPort": 443,
            "udpPort": 443,
            "relayPorts": [49152, 65535],
        }
        services = {s["name"]: s for s in document["services"]}
        assert services["https"]["protocol"] == "tcp" and services["https"]["required"] is True
        assert services["p2p"] == {
            "name": "p2p",
            "purpose": "peer-to-peer media between participants",
            "protocol": "udp",
            "ports": [1024, 65535],
            "destination": "any",
            "required": False,
        }

    def test_ip_url_adds_the_address(self) -> None:
        network = NetworkDescription.single_node(
            "https://10.200.1.2:8443", ["10.200.1.9"], 8443, (5000, 6000)
        )
        assert network.hostnames == ()
        assert network.nodes[0].addresses == ("10.200.1.9", "10.200.1.2")

    @pytest.mark.parametrize(
        "change",
        [
            {"version": 2},
            {"nodes": []},
            {
                "nodes": [
                    {
                        "name": "x",
                        "addresses": ["not-an-ip"],
                        "tcpPort": 1,
                        "udpPort": 1,
                        "relayPorts": [1, 2],
                    }
                ]
            },
            {
                "nodes": [
                    {"name": "x", "addresses": ["1.2.3.4"], "tcpPort": 0, "udpPort": 1, "relayPorts": [1, 2]}
                ]
            },
            {
                "nodes": [
                    {"name": "x", "addresses": ["1.2.3.4"], "tcpPort": 1, "udpPort": 1, "relayPorts": [3, 2]}
                ]
            },
            {"hostnames": ['evil"; drop']},
            {"publicUrl": None},
        ],
    )
    def test_from_json_refuses(self, change: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            NetworkDescription.from_json({**NETWORK.to_json(), **change})

    def test_from_config(self, tmp_path: Path) -> None:
        config = load_serve_config(
            ["--public-ip", "203.0.113.5", "--public-url", "https://meet.example.org", "--port", "443",
             "--public-ipv6", "2001:db8::5", "--data-dir", str(tmp_path), "--workers", "2"],
            {},
        )  # fmt: skip
        (node,) = NETWORK.nodes
        # Worker k's SFU port is --other-udp-port (3478) + k.
        expected = dataclasses.replace(NETWORK, nodes=(dataclasses.replace(node, sfu_ports=(3478, 3479)),))
        assert NetworkDescription.from_config(config) == expected
        assert expected.to_json()["nodes"][0]["sfuPorts"] == [3478, 3479]
        assert NetworkDescription.from_json(expected.to_json()) == expected


class TestRules:
    def test_default_rules_name_the_servers_main_port_only(self) -> None:
        rules = outbound_rules(NETWORK)
        assert [(r.protocol, r.destination, r.ports) for r in rules] == [
            ("tcp", "203.0.113.5", (443, 443)),
            ("udp", "203.0.113.5", (443, 443)),
            ("tcp", "2001:db8::5", (443, 443)),
            ("udp", "2001:db8::5", (443, 443)),
        ]

    def test_options(self) -> None:
        rules = outbound_rules(NETWORK, relay_direct=True, p2p=True)
        assert ("udp", "203.0.113.5", (49152, 65535)) in [(r.protocol, r.destination, r.ports) for r in rules]
        assert rules[-1].destination is None and rules[-1].ports == (1024, 65535)

    def test_nftables(self) -> None:
        text = render(NETWORK, outbound_rules(NETWORK, p2p=True), "nftables", client_net="10.1.0.0/16")
        assert "type filter hook forward priority 0; policy drop;" in text
        assert "ct state established,related accept" in text
        assert 'ip saddr 10.1.0.0/16 ip daddr 203.0.113.5 tcp dport 443 ct state new accept comment "' in text
        assert "ip6 daddr 2001:db8::5 udp dport 443" in text
        assert "ip saddr 10.1.0.0/16 udp dport 1024-65535 ct state new accept" in text
        assert text.count("{") == text.count("}")

    def test_iptables(self) -> None:
        text = render(NETWORK, outbound_rules(NETWORK, relay_direct=True), "iptables", hook="output")
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        assert lines[0] == "iptables -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        assert any("iptables -A OUTPUT -d 203.0.113.5 -p udp --dport 49152:65535" in line for line in lines)
        assert any(line.startswith("ip6tables -A OUTPUT -d 2001:db8::5 -p tcp --dport 443") for line in lines)
        v4_only = render(NETWORK, outbound_rules(NETWORK), "iptables", client_net="10.0.0.0/8")
        assert "ip6tables" not in v4_only

    def test_json_and_table(self) -> None:
        document = json.loads(render(NETWORK, outbound_rules(NETWORK, p2p=True), "json"))
        assert document["server"] == "https://meet.example.org"
        assert document["rules"][-1] == {
            "protocol": "udp",
            "destination": None,
            "ports": [1024, 65535],
            "purpose": "peer-to-peer media between participants",
            "required": False,
        }
        table = render(NETWORK, outbound_rules(NETWORK), "table")
        assert table.splitlines()[2].split() == ["service", "source", "destination", "port", "protocol"]
        assert "meet.example.org" in table


class TestCommand:
    def test_from_the_serve_options_without_reading_secrets(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        data = tmp_path / "data"
        status = main(
            ["firewall-rules", "--format", "json", "--public-ip", "198.51.100.4", "--port", "443",
             "--relay-ports", "50000-50999", "--relay-direct", "--sfu-direct", "--data-dir", str(data),
             "--workers", "3",
             # A cluster node's config: its database password file is not read either.
             "--database", "postgresql://meet@db/meet", "--database-password-file", str(tmp_path / "absent")]
        )  # fmt: skip
        assert status == 0
        document = json.loads(capsys.readouterr().out)
        assert [(r["protocol"], r["destination"], r["ports"]) for r in document["rules"]] == [
            ("tcp", "198.51.100.4", [443, 443]),
            ("udp", "198.51.100.4", [443, 443]),
            ("udp", "198.51.100.4", [3478, 3480]),  # the SFU ports of three workers
            ("udp", "198.51.100.4", [50000, 50999]),
        ]
        assert not data.exists()  # no secret generated for a rules printout

    def test_environment_and_toml_like_serve(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = tmp_path / "meet443.toml"
        config.write_text('public-ip = "198.51.100.4"\nport = 8443\n')
        monkeypatch.setenv("MEET443_RELAY_PORTS", "40000-40099")
        assert (
            main(["firewall-rules", "--config", str(config), "--format", "nftables", "--relay-direct"]) == 0
        )
        out = capsys.readouterr().out
        assert "ip daddr 198.51.100.4 tcp dport 8443" in out and "udp dport 40000-40099" in out

    def test_usage_errors(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["firewall-rules", "--public-ip", "198.51.100.4", "--client-net", "nonsense"]) == 2
        assert main(["firewall-rules", "--url", "https://meet.example.org"]) == 2
        assert "--api-key" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_info:
            main(["firewall-rules", "--format", "pf"])
        assert exit_info.value.code == 2
