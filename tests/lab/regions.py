"""A lab with distance: client and region namespaces behind one router whose forwarding path runs
through the user-space delay line (:mod:`lab.delayline`), so every pair of sites is its own number of
milliseconds apart.

Geometry: each site sits at a point on a line measured in one-way milliseconds; the round-trip time
between two sites is twice their distance. One line keeps every triangle honest (a relay in between
never beats the direct path) and gives, with :data:`DEFAULT_SITES`:

=========  ======  ======  ======
RTT (ms)   r1      r2      r3
=========  ======  ======  ======
c1         10      60      120
c2         60      10      50
r1                 50      110
r2                         60
=========  ======  ======  ======

Addresses: site ``k`` (in the order given) owns ``base + 16k`` /28; the router is ``.1`` of it, the
site's first address ``.2``, and a site may add more (:meth:`RegionsLab.add_address`) up to ``.14`` —
room for several nodes per region. The delay line keys on the /28s, so every address of a site is as
far away as the site.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.delayline import DelaySpec
from lab.netns import Lab, LabError, Namespace, Proc

DELAY_LINE = Path(__file__).with_name("delayline.py")
#: One-way milliseconds from an origin on the line: two clients and three regions.
DEFAULT_SITES: Mapping[str, float] = {"c1": 0.0, "c2": 35.0, "r1": 5.0, "r2": 30.0, "r3": 60.0}
#: Router policy-routing table that sends every packet from a lab link into the TUN.
DELAY_TABLE = "201"
SITE_PREFIX = 28
DELAY_LINE_PRIORITY = 20


@dataclass(frozen=True)
class Site:
    name: str
    ns: Namespace
    network: ipaddress.IPv4Network
    position_ms: float

    @property
    def address(self) -> str:
        """The site's first address (``.2`` of its /28)."""
        return str(self.network.network_address + 2)

    def host(self, index: int) -> str:
        """The site's ``index``-th address (0 is :attr:`address`); the lab adds it with add_address."""
        if not 0 <= index <= 12:
            raise ValueError("a site has 13 addresses (.2 to .14)")
        return str(self.network.network_address + 2 + index)


class RegionsLab:
    """Router ``{prefix}rt``, one namespace per site, the delay line between them all."""

    def __init__(
        self,
        lab: Lab,
        base: str = "10.200.150.0",
        sites: Mapping[str, float] = DEFAULT_SITES,
    ) -> None:
        self.lab = lab
        self.router = lab.namespace("rt")
        self.tun = f"{lab.prefix}tun"
        self.sites: dict[str, Site] = {}
        first = ipaddress.IPv4Address(base)
        for k, (name, position) in enumerate(sites.items()):
            network = ipaddress.IPv4Network(f"{first + 16 * k}/{SITE_PREFIX}")
            self.sites[name] = Site(name, lab.namespace(name), network, position)
        for ns in (self.router, *(site.ns for site in self.sites.values())):
            # IPv4 only, before any link is up: a link-local IPv6 address appearing a second later
            # is a network change to Chromium, which then fails what it is loading.
            off = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            ns.run(["sysctl", "-qw", *off])
        self._build()
        self.delay_line = self._start_delay_line()

    def rtt_ms(self, a: str, b: str) -> float:
        """The round-trip time the lab puts between sites ``a`` and ``b`` (without the kernel's own)."""
        return 2.0 * abs(self.sites[a].position_ms - self.sites[b].position_ms)

    def add_address(self, site: str, index: int) -> str:
        """Give ``site`` one more address of its /28 (for a second node in a region)."""
        s = self.sites[site]
        address = s.host(index)
        dev = self._devs[site]
        s.ns.run(["ip", "addr", "add", f"{address}/{SITE_PREFIX}", "dev", dev])
        return address

    def hosts_file(self, names: Mapping[str, str], directory: Path) -> Path:
        """An /etc/hosts for clients that resolve lab host names (``name → address``)."""
        path = directory / "hosts"
        lines = ["127.0.0.1 localhost", *(f"{address} {name}" for name, address in names.items())]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _build(self) -> None:
        rt = self.router
        rt.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for key in ("all", "default"):
            rt.run(["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        rt.run(["ip", "tuntap", "add", "dev", self.tun, "mode", "tun"])
        rt.run(["ip", "link", "set", self.tun, "up"])
        rt.run(["sysctl", "-qw", f"net.ipv4.conf.{self.tun}.rp_filter=0"])
        rt.run(["ip", "route", "add", "default", "dev", self.tun, "table", DELAY_TABLE])
        # What comes back out of the delay line is routed normally; this rule outranks the ones below.
        rt.run(["ip", "rule", "add", "iif", self.tun, "lookup", "main", "priority", "100"])
        self._devs: dict[str, str] = {}
        for site in self.sites.values():
            gateway = str(site.network.network_address + 1)
            link = self.lab.veth(rt, f"{gateway}/{SITE_PREFIX}", site.ns, f"{site.address}/{SITE_PREFIX}")
            self._devs[site.name] = link.b_dev
            site.ns.run(["ip", "route", "add", "default", "via", gateway])
            rt.run(["sysctl", "-qw", f"net.ipv4.conf.{link.a_dev}.rp_filter=0"])
            rt.run(["ip", "rule", "add", "iif", link.a_dev, "lookup", DELAY_TABLE, "priority", "200"])

    def spec(self) -> DelaySpec:
        delays = tuple(
            (a.network, b.network, self.rtt_ms(a.name, b.name) / 2.0 / 1000.0)
            for a in self.sites.values()
            for b in self.sites.values()
            if a is not b
        )
        return DelaySpec(self.tun, delays)

    def _start_delay_line(self) -> Proc:
        path = self.lab.workdir / "delayline.json"
        path.write_text(self.spec().to_json())
        # Real-time priority: the delay line's timers must not wait behind browsers and servers
        # sharing the two cores, or their wait shows up as jitter (SCHED_FIFO, throttled by the
        # kernel's RT bandwidth limit, and the program sleeps between packets).
        argv = ["chrt", "--fifo", str(DELAY_LINE_PRIORITY), sys.executable, DELAY_LINE, path]
        proc = self.router.spawn(argv, name="delayline")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and proc.alive():
            if "delay line on" in proc.log_text():
                return proc
            time.sleep(0.05)
        raise LabError(f"the delay line did not start: {proc.describe()}")
