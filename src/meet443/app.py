"""``meet443 serve``: one TCP port and one UDP port serving everything, on uvloop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import uvloop
from aiohttp import web

from meet443.aio.certs import ensure_certificate, make_server_ssl_context
from meet443.aio.http import HttpService, build_main_app, build_metrics_app
from meet443.aio.network import NetworkEndpoints
from meet443.aio.sfu import SfuService
from meet443.aio.signaling import SignalingService
from meet443.aio.sockets import MAIN_UDP_BUFFER_BYTES, enlarge_udp_buffers
from meet443.aio.tcp import SniffingTcpPort
from meet443.aio.turn import MainUdpProtocol, RelayPool, TurnService
from meet443.config import ServeConfig, ip_literal_warning
from meet443.meetings import MeetingStore
from meet443.network import NetworkDescription
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.room import SignalingLimits
from meet443.proto.turn.credentials import CredentialStore
from meet443.proto.turn.peer_policy import PeerPolicy
from meet443.proto.turn.server import TurnServer, TurnSettings

logger = logging.getLogger("meet443")

SHUTDOWN_SECONDS = 4.0


def _own_addresses(config: ServeConfig) -> list[str]:
    addresses = [config.public_ip]
    if config.public_ipv6 is not None:
        addresses.append(config.public_ipv6)
    if config.listen not in ("0.0.0.0", "::"):  # noqa: S104
        addresses.append(config.listen)
    return addresses


def build_turn_service(config: ServeConfig) -> TurnService:
    settings = TurnSettings(
        realm=config.realm,
        max_allocations_per_user=config.max_allocations_per_user,
        max_allocations=config.max_allocations,
        allocation_bandwidth=float(config.allocation_bandwidth),
        unauthenticated_rate=config.unauth_rate,
        unauthenticated_burst=config.unauth_burst,
        ipv6_relay=config.public_ipv6 is not None,
        change_port=True,
        server_addresses=frozenset(_own_addresses(config)),
    )
    own = _own_addresses(config)

    def make_turn(pool: RelayPool) -> TurnServer:
        return TurnServer(
            settings,
            CredentialStore(config.turn_secret, config.turn_users),
            PeerPolicy(
                [str(n) for n in config.allow_peers],
                server_addresses=own,
                main_port=config.port,
                relay_ports=config.relay_ports,
            ),
            pool,
            os.urandom,
        )

    return TurnService(
        make_turn, config.listen, config.public_ip, config.relay_ports, own, config.public_ipv6
    )


def build_signaling_service(config: ServeConfig, store: MeetingStore) -> SignalingService:
    async def directory(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
        # SQLite blocks; a thread keeps a slow disk from stalling media on the event loop.
        return await asyncio.to_thread(
            store.admission,
            room,
            room_key,
            int(now * 1000),
            require_api_key=config.require_api_key,
            default_mode=config.default_room_mode,
        )

    async def meeting_ended(room: str) -> None:
        await asyncio.to_thread(store.end, room, int(time.time() * 1000))

    return SignalingService(
        directory,
        turn_secret=config.turn_secret,
        public_url=config.public_url,
        turn_port=config.port,
        credential_ttl=config.credential_ttl,
        force_relay=config.force_relay,
        max_participants=config.max_participants,
        limits=SignalingLimits(
            join_rate=config.joins_per_minute / 60,
            join_burst=2.0 * config.joins_per_minute,
            room_creation_rate=config.joins_per_minute / 120,
            room_creation_burst=float(config.joins_per_minute),
        ),
        on_meeting_ended=meeting_ended,
    )


def _sfu_addresses(config: ServeConfig, other_port: int | None) -> tuple[tuple[str, int], ...]:
    """The SFU's host candidates (RFC 8445 §5.1.1.1): the public address on the main port, and on
    the second UDP port, since browsers ignore candidates on ports below 1024 (such as 443)."""
    addresses = [(config.public_ip, config.port)]
    if other_port is not None and other_port != config.port:
        addresses.append((config.public_ip, other_port))
    if config.public_ipv6 is not None:
        addresses.append((config.public_ipv6, config.port))
    return tuple(addresses)


def _tls_files(config: ServeConfig) -> tuple[Path, Path]:
    if config.cert is not None and config.key is not None:
        return config.cert, config.key
    hosts = [config.public_host, config.public_ip]
    if config.listen not in ("0.0.0.0", "::"):  # noqa: S104
        hosts.append(config.listen)
    return ensure_certificate(config.data_dir, hosts)


async def run(config: ServeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    cert, key = _tls_files(config)
    ssl_context = make_server_ssl_context(cert, key)

    service = build_turn_service(config)
    store = MeetingStore.open(config.data_dir)
    signaling = build_signaling_service(config, store)
    sfu = SfuService(
        _sfu_addresses(config, None),
        deliver=signaling.deliver,
        broadcast=signaling.broadcast,
        last_n=config.sfu_last_n,
        nack=config.sfu_nack,
    )
    signaling.on_sfu = sfu.signaling_output
    udp_sock = socket.socket(socket.AF_INET6 if ":" in config.listen else socket.AF_INET, socket.SOCK_DGRAM)
    enlarge_udp_buffers(udp_sock, MAIN_UDP_BUFFER_BYTES)
    udp_sock.bind((config.listen, config.port))
    udp_transport, _ = await loop.create_datagram_endpoint(
        lambda: MainUdpProtocol(service, sfu), sock=udp_sock
    )
    other_port = await service.open_other_port(
        config.listen, config.other_udp_port, fixed=config.other_udp_port_fixed, sfu=sfu
    )
    service.turn.policy.allow_server_port(other_port)  # the relay's hop to the SFU
    sfu.conference.addresses = _sfu_addresses(config, other_port)
    service.start()
    sfu.start()

    network = NetworkEndpoints(
        description=NetworkDescription.from_config(config),
        turn_secret=config.turn_secret,
        turn_uris=config.turn_uris(),
        relay_ports=config.relay_ports,
        other_udp_port=lambda: service.other_port,
        check_rate_per_minute=config.check_rate,
    )
    app = build_main_app(
        config.public_url, embed_origins=config.embed_origins, meetings=store, network=network
    )
    signaling.add_routes(app)
    http = HttpService(app)
    await http.start()
    tcp = SniffingTcpPort(service.stream_protocol, http.protocol, ssl_context, config.max_pending_connections)
    tcp.listen(config.listen, config.port)

    where = f"{config.listen}:{config.port}"
    logger.info("listening on udp %s: STUN, TURN (UDP) and ChannelData; SFU (ICE-lite, DTLS-SRTP)", where)
    logger.info("listening on udp %s:%d: STUN Binding only (RFC 5780 change port)", config.listen, other_port)
    logger.info(
        "listening on tcp %s: TURN over TCP and TLS; HTTPS web app, REST API and WSS signaling", where
    )
    logger.info(
        "relay ports %d-%d advertised at %s; public URL %s",
        *config.relay_ports,
        config.public_ip,
        config.public_url,
    )

    metrics_runner: web.AppRunner | None = None
    if config.metrics_listen is not None:
        metrics_runner = web.AppRunner(
            build_metrics_app(service, signaling.core, sfu.conference), access_log=None, handle_signals=False
        )
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, *config.metrics_listen).start()
        logger.info("listening on tcp %s:%d: Prometheus metrics at /metrics", *config.metrics_listen)

    def reload_certificates() -> None:
        try:
            ssl_context.load_cert_chain(*_tls_files(config))
            logger.info("TLS certificates reloaded")
        except (OSError, ssl.SSLError) as exc:
            logger.error("TLS certificate reload failed, keeping the old one: %s", exc)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_certificates)
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        tcp.close()
        await sfu.close()
        udp_transport.close()
        service.close()
        cleanups = [http.close()] + ([metrics_runner.cleanup()] if metrics_runner else [])
        try:
            await asyncio.wait_for(asyncio.gather(*cleanups), SHUTDOWN_SECONDS)
        except TimeoutError:
            logger.warning("shutdown did not finish in %.0f s", SHUTDOWN_SECONDS)
        store.close()


def serve(config: ServeConfig) -> int:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logger.info("meet443 starting: %s", config.redacted())
    if (warning := ip_literal_warning(config.public_url)) is not None:
        logger.warning("%s", warning)
    uvloop.run(run(config))
    return 0
