"""The lab harness itself: uclient's output parser (pure) and namespace lifecycle (root)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lab.netns import Lab, LabError, list_namespaces, unavailable_reason, wait_listening
from lab.turnutils import UclientCredentials, UclientLoad, UclientReport

# Captured from turnutils_uclient (coturn 4.6.1) relaying through coturn.
UCLIENT_OUTPUT = (
    "0: : Total connect time is 0\n"
    "1: : start_mclient: msz=4, tot_send_msgs=0, tot_recv_msgs=0"
    ", tot_send_bytes ~ 0, tot_recv_bytes ~ 0\n"
    "3: : start_mclient: msz=4, tot_send_msgs=12500, tot_recv_msgs=12450"
    ", tot_send_bytes ~ 1500000, tot_recv_bytes ~ 1494000\n"
    "7: : start_mclient: msz=4, tot_send_msgs=77300, tot_recv_msgs=77250"
    ", tot_send_bytes ~ 9276000, tot_recv_bytes ~ 9270000\n"
    "7: : start_mclient: tot_send_msgs=80000, tot_recv_msgs=79990\n"
    "7: : start_mclient: tot_send_bytes ~ 9600000, tot_recv_bytes ~ 9598800\n"
    "7: : Total transmit time is 7\n"
    "7: : Total lost packets 10 (0.012500%), total send dropped 0 (0.000000%)\n"
    "7: : Average round trip delay 0.010325 ms; min = 0 ms, max = 4 ms\n"
    "7: : Average jitter 0.080000 ms; min = 0 ms, max = 8 ms\n"
)


class TestUclientOutput:
    def test_summary(self) -> None:
        r = UclientReport.parse(UCLIENT_OUTPUT)
        assert (r.sent, r.received, r.lost, r.send_dropped) == (80000, 79990, 10, 0)
        assert r.lost_pct == pytest.approx(0.0125)
        assert (r.transmit_time_s, r.max_rtt_ms) == (7, 4)
        assert r.avg_rtt_ms == pytest.approx(0.010325)
        assert [(p.second, p.sessions, p.sent, p.received) for p in r.progress] == [
            (1, 4, 0, 0),
            (3, 4, 12500, 12450),
            (7, 4, 77300, 77250),
        ]
        assert r.errors == ()

    def test_nan_when_nothing_was_sent(self) -> None:
        text = UCLIENT_OUTPUT.replace("(0.012500%)", "(-nan%)").replace(
            "Average jitter 0.080000", "Average jitter -nan"
        )
        r = UclientReport.parse(text)
        assert r.lost_pct != r.lost_pct and r.avg_jitter_ms != r.avg_jitter_ms

    def test_failure_has_no_summary(self) -> None:
        with pytest.raises(ValueError, match="no summary"):
            UclientReport.parse("0: : ERROR: Cannot complete Allocation\n")

    def test_errors_are_collected(self) -> None:
        r = UclientReport.parse(
            "0: : ERROR: received buffer have wrong length: 9, must be 124\n" + UCLIENT_OUTPUT
        )
        assert len(r.errors) == 1


class TestUclientArguments:
    def test_tls_with_rest_secret(self) -> None:
        load = UclientLoad("tls", clients=2, messages=10, size=1000, interval_ms=5)
        argv = load.argv(
            ("127.0.0.1", 443), ("127.0.0.2", 3480), UclientCredentials("bob", secret="s"), Path("ca")
        )
        assert argv == [
            "turnutils_uclient", "-c", "-p", "443", "-e", "127.0.0.2", "-r", "3480", "-t", "-S", "-E", "ca",
            "-m", "2", "-n", "10", "-l", "1000", "-z", "5", "-W", "s", "-u", "bob", "127.0.0.1",
        ]  # fmt: skip

    def test_udp_send_indications_with_static_user(self) -> None:
        load = UclientLoad("udp", send_indications=True)
        argv = load.argv(("127.0.0.1", 3478), ("127.0.0.2", 3480), UclientCredentials("u", password="p"))
        assert "-s" in argv and "-t" not in argv and argv[-5:] == ["-u", "u", "-w", "p", "127.0.0.1"]


@pytest.mark.netns
class TestLab:
    @pytest.fixture(autouse=True)
    def _root(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
                pytest.fail(f"CI must run the netns tests, but: {reason}", pytrace=False)
            pytest.skip(reason)

    def test_namespaces_links_and_teardown(self, tmp_path: Path) -> None:
        listener = (
            "import socket,time; s=socket.socket(); s.bind(('10.200.250.2', 5000)); s.listen(); time.sleep(9)"
        )
        connect = (
            "import socket; socket.create_connection(('10.200.250.2', 5000), timeout=2).close(); print('ok')"
        )
        with Lab(tmp_path) as lab:
            a, b = lab.namespace("a"), lab.namespace("b")
            lab.veth(a, "10.200.250.1/24", b, "10.200.250.2/24")
            proc = b.spawn([sys.executable, "-c", listener], name="listener")
            wait_listening(b, "10.200.250.2", 5000, "tcp", proc=proc)
            assert a.run([sys.executable, "-c", connect]).stdout.strip() == "ok"
            # Only lo and the veth: no route anywhere else.
            assert a.run(["ip", "-o", "route"]).stdout.split()[0] == "10.200.250.0/24"
            with pytest.raises(ValueError, match=r"10\.200\.0\.0/16"):
                lab.veth(a, "192.168.7.1/24", b, "192.168.7.2/24")
            names = {a.name, b.name}
        assert proc.popen.returncode is not None
        assert not names & list_namespaces()

    def test_wait_listening_reports_a_dead_process(self, tmp_path: Path) -> None:
        with Lab(tmp_path) as lab:
            ns = lab.namespace("c")
            proc = ns.spawn([sys.executable, "-c", "print('bye')"], name="short")
            with pytest.raises(LabError, match="bye"):
                wait_listening(ns, "127.0.0.1", 5001, "udp", timeout=5, proc=proc)

    def test_a_namespace_has_only_loopback(self, tmp_path: Path) -> None:
        """A UDP connect() to a lab address fails for want of a route: nothing is ever sent."""
        with Lab(tmp_path) as lab:
            ns = lab.namespace("d")
            probe = (
                "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "try:\n s.connect(('10.200.1.1', 9)); print('routed')\n"
                "except OSError as e: print('unreachable', e.errno)"
            )
            assert ns.run([sys.executable, "-c", probe]).stdout.startswith("unreachable")
