"""``meet443 serve``: one TCP port and one UDP port serving everything, on uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import resource
import secrets
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import uvloop
from aiohttp import web

from meet443 import ipc
from meet443.aio.certs import ensure_certificate, make_server_ssl_context
from meet443.aio.cluster import Cluster, NodeAddresses, SetTurn
from meet443.aio.control import MediaWorkers
from meet443.aio.http import (
    HttpService,
    build_main_app,
    build_metrics_app,
    render_metrics,
    render_named_metrics,
)
from meet443.aio.network import NetworkEndpoints
from meet443.aio.node import Directory, NodeService
from meet443.aio.signaling import MAX_MSG_SIZE
from meet443.aio.sockets import MAIN_UDP_BUFFER_BYTES, enlarge_udp_buffers
from meet443.aio.tcp import SniffingTcpPort
from meet443.aio.turn import RelayPool, bind_other_port
from meet443.config import DEFAULT_REGION, ServeConfig, ip_literal_warning, redact_url, turn_uris_for
from meet443.exceptions import ParseError
from meet443.network import NetworkDescription
from meet443.node import NodeCore
from meet443.proto.addresses import ServerPort
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.shares import LocalSharedCap, default_share
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.room import SignalingLimits, SignalingServer
from meet443.proto.signaling.snapshot import RoomSnapshot
from meet443.proto.turn.credentials import CredentialStore, rest_credentials
from meet443.proto.turn.peer_policy import PeerPolicy
from meet443.proto.turn.quota import QuotaLedger
from meet443.proto.turn.server import TurnServer, TurnSettings
from meet443.regions import Probe, RegionMap, RegionNode, live_regions
from meet443.sfu.conference import Conference
from meet443.state import SharedState
from meet443.state.memory import MemoryState
from meet443.state.redis_backend import RedisState
from meet443.state.rooms import RoomStateStore, SharedRoomStore, SqliteRoomStore
from meet443.store import MeetingStore, open_store
from meet443.workers import WorkerPlacement

logger = logging.getLogger("meet443")

#: Where a node learns the deployment's live regions: read at every use, since a cluster's registry
#: changes as nodes come and go (:func:`static_regions` is the fixed one).
RegionSource = Callable[[], RegionMap]

#: An address may keep this many connections pending however small the global cap's tenth is.
MIN_PENDING_PER_ADDRESS = 32
#: Descriptors the server holds whatever its load: listeners, the UDP ports, the database, logs,
#: the event loop's own.
BASE_DESCRIPTORS = 64


def descriptor_needs(config: ServeConfig) -> dict[str, int]:
    """What the configured caps can hold open at once, by cap. An allocation over TCP or TLS holds
    two descriptors (the client's connection and the relay socket)."""
    return {
        "TURN allocations": 2 * config.max_allocations,
        "signaling sockets": 2 * config.max_participants,
        "pending connections": config.max_pending_connections,
        "the server itself": BASE_DESCRIPTORS,
    }


def raise_descriptor_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (the soft one is often 1024) and return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # an infinite hard limit is above the kernel's nr_open
            logger.debug("cannot raise the descriptor limit to %s: %s", hard, exc)
    return soft


def check_descriptor_limit(config: ServeConfig, limit: int) -> None:
    """Log the limit, and warn when the caps can need more: past it, new connections wait in the
    kernel's queue and Allocate requests get 508."""
    needs = descriptor_needs(config)
    logger.info("file descriptor limit %d", limit)
    if limit != resource.RLIM_INFINITY and sum(needs.values()) > limit:
        logger.warning(
            "the configured caps can hold %d descriptors open (%s), more than the limit of %d; raise "
            "it (systemd LimitNOFILE=, ulimit -Hn) or lower --max-allocations / --max-participants / "
            "--max-pending-connections",
            sum(needs.values()),
            ", ".join(f"{what} {n}" for what, n in needs.items()),
            limit,
        )


def _own_addresses(config: ServeConfig) -> list[str]:
    addresses = [config.public_ip]
    if config.public_ipv6 is not None:
        addresses.append(config.public_ipv6)
    if config.listen not in ("0.0.0.0", "::"):  # noqa: S104
        addresses.append(config.listen)
    return addresses


def build_turn_server(
    config: ServeConfig, relays: RelayPool, ledger: QuotaLedger | None = None
) -> TurnServer:
    own = _own_addresses(config)
    settings = TurnSettings(
        realm=config.realm,
        max_allocations_per_user=config.max_allocations_per_user,
        max_allocations=config.max_allocations,
        allocation_bandwidth=float(config.allocation_bandwidth),
        unauthenticated_rate=config.unauth_rate,
        unauthenticated_burst=config.unauth_burst,
        ipv6_relay=config.public_ipv6 is not None,
        change_port=True,
        server_addresses=frozenset(own),
    )
    return TurnServer(
        settings,
        CredentialStore(config.turn_secret, config.turn_users),
        PeerPolicy(
            [str(n) for n in config.allow_peers],
            server_addresses=own,
            main_port=config.port,
            relay_ports=config.relay_ports,
        ),
        relays,
        os.urandom,
        ledger,
        nonce_key=turn_nonce_key(config.turn_secret),
    )


def turn_nonce_key(turn_secret: str) -> bytes:
    """The key TURN nonces are signed with, derived from the TURN secret: every media worker of
    a node (``--workers``) and every node of a cluster accepts a nonce another issued, since the
    next request from one client address may arrive on another socket, hence another worker."""
    return hmac.new(turn_secret.encode(), b"meet443 TURN nonce key", hashlib.sha256).digest()


def build_signaling_server(
    *,
    turn_secret: str,
    public_url: str,
    turn_port: int,
    credential_ttl: int = 3600,
    force_relay: bool = False,
    max_participants: int = 10000,
    limits: SignalingLimits | None = None,
    server_epoch: int = 0,
    resume_key: bytes | None = None,
    token: Callable[[int], str] = secrets.token_urlsafe,
    regions: RegionSource | None = None,
) -> SignalingServer:
    """The signaling core, handing out TURN credentials for this server's TURN URIs, or with
    ``regions`` for the TURN URIs of the regions closest to each participant (docs/cluster.md)."""
    uris = turn_uris_for(public_url, turn_port)

    def ice_servers(participant_id: str, now: float, probe: Probe) -> tuple[list[dict[str, object]], int]:
        # docs/signaling.md: username = expiry:participantId. Every region's TURN service shares the
        # secret, so one credential serves the closest region and its fallback alike.
        username, credential = rest_credentials(turn_secret, participant_id, credential_ttl, now)
        chosen = list(uris) if regions is None else regions().turn_uris(probe.rtts, probe.unreachable)
        return [{"urls": chosen, "username": username, "credential": credential}], credential_ttl

    return SignalingServer(
        ice_servers=ice_servers,
        token=token,
        force_relay=force_relay,
        max_participants=max_participants,
        limits=limits,
        server_epoch=server_epoch,
        resume_key=resume_key,
        known_regions=tuple if regions is None else lambda: [r.name for r in regions().regions],
    )


def meeting_directory(
    config: ServeConfig, store: MeetingStore
) -> tuple[Directory, Callable[[str], Awaitable[None]]]:
    """The meeting store as the signaling adapter asks it: who may join a room, and an ended meeting."""

    async def directory(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
        return await store.admission(
            room,
            room_key,
            int(now * 1000),
            require_api_key=config.require_api_key,
            default_mode=config.default_room_mode,
        )

    async def meeting_ended(room: str) -> None:
        await store.end(room, int(time.time() * 1000))

    return directory, meeting_ended


def static_regions(config: ServeConfig) -> RegionSource:
    """The regions ``--region`` and ``--region-node`` name (by default this node alone).

    The one place a node's region list comes from; a cluster's node registry is the other
    implementation of :data:`RegionSource`.
    """
    regions = config.region_map()
    return lambda: regions


def cluster_regions(config: ServeConfig, registry: Sequence[Cluster]) -> RegionSource:
    """The regions of the cluster's live nodes (``registry[0].live``, refreshed by every heartbeat),
    this node standing for its own region; before the link exists, this node alone."""
    own = config.region_map().regions[0]

    def regions() -> RegionMap:
        live = registry[0].live.values() if registry else ()
        return live_regions(
            own,
            (
                RegionNode(
                    node.region or DEFAULT_REGION,
                    _origin(node.node_url),
                    tuple(turn_uris_for(node.node_url, node.port)),
                    node.load / max(1, node.capacity),
                    node.accepts_rooms,
                )
                for node in live
            ),
        )

    return regions


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _node_signaling(
    config: ServeConfig, server_epoch: int, regions: RegionSource | None = None
) -> SignalingServer:
    return build_signaling_server(
        regions=regions or static_regions(config),
        turn_secret=config.turn_secret,
        # In a cluster, participants use the TURN of their room's home, next to its SFU.
        public_url=config.node_url or config.public_url,
        turn_port=config.port,
        credential_ttl=config.credential_ttl,
        force_relay=config.force_relay,
        max_participants=config.max_participants,
        limits=SignalingLimits(
            max_connections_per_address=config.signaling_sockets_per_address,
            join_rate=config.joins_per_minute / 60,
            join_burst=2.0 * config.joins_per_minute,
            room_creation_rate=config.joins_per_minute / 120,
            room_creation_burst=float(config.joins_per_minute),
        ),
        # One per start, from the store: chat ids of this run never repeat an earlier run's, nor
        # another node's.
        server_epoch=server_epoch,
        resume_key=config.resume_key,
    )


def build_node(
    config: ServeConfig, relays: RelayPool, server_epoch: int, regions: RegionSource | None = None
) -> NodeCore:
    """Every core of a single node: TURN, the SFU and signaling, composed."""
    signaling = _node_signaling(config, server_epoch, regions)
    conference = Conference(
        DtlsCertificate.generate(time.time(), os.urandom),
        sfu_addresses(config, None),
        os.urandom,
        last_n=config.sfu_last_n,
        nack=config.sfu_nack,
    )
    return NodeCore(signaling, build_turn_server(config, relays), conference)


async def build_service(
    config: ServeConfig,
    store: MeetingStore,
    rooms: RoomStateStore | None = None,
    regions: RegionSource | None = None,
) -> NodeService:
    """The node of ``meet443 serve`` in its adapter, before any socket is bound; with ``rooms``,
    the rooms it holds are restored from there and written through to it; ``regions`` (by default
    :func:`static_regions`) pick each participant's TURN servers."""
    relays = RelayPool(config.listen, config.public_ip, config.relay_ports, config.public_ipv6)
    directory, meeting_ended = meeting_directory(config, store)
    node = build_node(config, relays, await store.next_epoch(), regions)
    if rooms is not None:
        node.restore(load_rooms(rooms), time.time())
    return NodeService(
        node,
        relays,
        directory=directory,
        public_url=config.public_url,
        on_meeting_ended=meeting_ended,
        rooms=rooms,
    )


async def build_control_service(
    config: ServeConfig,
    store: MeetingStore,
    rooms: RoomStateStore | None,
    workers: MediaWorkers,
    regions: RegionSource | None = None,
) -> NodeService:
    """The control process of ``--workers N``: signaling, with the SFU rooms placed on workers
    (:func:`build_service` otherwise)."""
    directory, meeting_ended = meeting_directory(config, store)
    node = NodeCore(
        _node_signaling(config, await store.next_epoch(), regions), placement=WorkerPlacement(config.workers)
    )
    if rooms is not None:
        node.restore(load_rooms(rooms), time.time())
    return NodeService(
        node,
        None,
        directory=directory,
        public_url=config.public_url,
        on_meeting_ended=meeting_ended,
        rooms=rooms,
        to_process=workers.to_process,
    )


def shared_state(config: ServeConfig) -> SharedState:
    """Through Redis with ``--redis``, else in memory, where this node is the only one."""
    if config.redis is not None:
        logger.info("cluster mode: node %s, shared state %s", config.node_url, redact_url(config.redis))
        return RedisState.from_config(config.redis, config.redis_password_file)
    return MemoryState()


def build_cluster(
    config: ServeConfig,
    service: NodeService,
    sfu_ports: list[int],
    state: SharedState,
    set_turn: SetTurn | None = None,
) -> Cluster:
    """The node's link to the others (docs/cluster.md) through ``state``. ``sfu_ports``: every SFU
    port (one per media worker); ``set_turn``: where the registry's TURN settings go with workers."""
    addresses = tuple(_own_public_addresses(config))
    ports = tuple(dict.fromkeys((config.port, *sfu_ports)))
    client_ssl = ssl.create_default_context(
        cafile=str(config.cluster_ca_file) if config.cluster_ca_file is not None else None
    )
    # Say HTTP, as browsers do: the home's control process then serves the relay itself, without
    # a media worker's bridge in between (docs/workers.md "TURN over TCP and TLS").
    client_ssl.set_alpn_protocols(["http/1.1"])
    return Cluster(
        state,
        service,
        node_url=config.node_url or config.public_url,
        public_url=config.public_url,
        region=config.region,
        where=NodeAddresses(addresses, config.port, ports, config.relay_ports, config.max_participants),
        turn_secret=config.turn_secret,
        client_ssl=client_ssl,
        max_msg_size=MAX_MSG_SIZE,
        shared=config.cluster,
        set_turn=set_turn,
    )


def _own_public_addresses(config: ServeConfig) -> list[str]:
    addresses = [config.public_ip]
    if config.public_ipv6 is not None:
        addresses.append(config.public_ipv6)
    return addresses


def load_rooms(rooms: RoomStateStore) -> list[RoomSnapshot]:
    """The snapshots an earlier run wrote; one that does not decode is logged and left out."""
    loaded = []
    for name, data in rooms.load_all().items():
        try:
            loaded.append(RoomSnapshot.parse(data))
        except ParseError as exc:
            logger.warning("room %s: its saved state is unreadable, not restored: %s", name, exc)
    if loaded:
        logger.info("restoring %d rooms: their participants may resume for 30 s", len(loaded))
    return loaded


def sfu_addresses(config: ServeConfig, other_port: int | None) -> tuple[tuple[str, int], ...]:
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
    if config.node_url is not None:
        hosts.append(urlsplit(config.node_url).hostname or config.public_ip)
    if config.listen not in ("0.0.0.0", "::"):  # noqa: S104
        hosts.append(config.listen)
    return ensure_certificate(config.data_dir, hosts)


async def run(config: ServeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    cert, key = _tls_files(config)
    ssl_context = make_server_ssl_context(cert, key)

    store = await open_store(config.data_dir, config.database, config.database_password)
    logger.info("meetings and API keys in %s", store.where)
    state = shared_state(config)
    registry: list[Cluster] = []  # the cluster link, made once the service is
    rooms: RoomStateStore
    if config.cluster:
        # docs/cluster.md "Failover": snapshots go where the node that takes a room over reads
        # them, fenced with this node's lease on the room.
        rooms = SharedRoomStore(state, loop, lambda room: registry[0].epoch_of(room) if registry else None)
    else:
        rooms = SqliteRoomStore.open(config.data_dir)
    regions = cluster_regions(config, registry) if config.cluster else static_regions(config)
    workers: MediaWorkers | None = None
    if config.workers > 1:
        cap = config.max_pending_connections
        share = config.pending_connections_per_address or default_share(cap, MIN_PENDING_PER_ADDRESS)
        workers = MediaWorkers(config, cap, share, ipc.TlsFiles(str(cert), str(key)))
        service = await build_control_service(config, store, rooms, workers, regions)
        sfu_ports = workers.sfu_ports
        await workers.start(service)
    else:
        service = await build_service(config, store, rooms, regions)
        sfu_ports = [await _listen_single(config, service)]
    node = service.node
    other_port = sfu_ports[0]

    cluster = build_cluster(config, service, sfu_ports, state, None if workers is None else workers.set_turn)
    registry.append(cluster)
    network = NetworkEndpoints(
        description=NetworkDescription.from_config(config, (sfu_ports[0], sfu_ports[-1])),
        nodes=cluster.network_nodes if config.cluster else None,
        turn_secret=config.turn_secret,
        turn_uris=config.turn_uris(),
        relay_ports=config.relay_ports,
        other_udp_port=lambda: other_port,
        sfu_ports=(sfu_ports[0], sfu_ports[-1]),
        check_rate_per_minute=config.check_rate,
    )
    app = build_main_app(
        config.public_url,
        embed_origins=config.embed_origins,
        meetings=store,
        network=network,
        on_meeting_deleted=service.end_meeting,
        regions=regions,
    )
    service.signaling.add_routes(app)
    http = HttpService(app)
    await http.start()
    cap = config.max_pending_connections
    share = config.pending_connections_per_address or default_share(cap, MIN_PENDING_PER_ADDRESS)
    if workers is None:
        tcp = SniffingTcpPort(service.stream_protocol, http.protocol, ssl_context, LocalSharedCap(cap, share))
    else:
        tcp = SniffingTcpPort(None, http.protocol, ssl_context, LocalSharedCap(cap, share), workers.hand_over)
        workers.serve_http = tcp.serve_bridged_http
    tcp.listen(config.listen, config.port)

    where = f"{config.listen}:{config.port}"
    logger.info("listening on udp %s: STUN, TURN (UDP) and ChannelData; SFU (ICE-lite, DTLS-SRTP)", where)
    if workers is None:
        logger.info(
            "listening on udp %s:%d: SFU; STUN Binding (RFC 5780 change port)", config.listen, other_port
        )
    else:
        logger.info(
            "%d media workers; worker k: udp %s (shared), SFU and STUN Binding on udp %s:%d+k, "
            "relay ports %s",
            config.workers,
            where,
            config.listen,
            other_port,
            ", ".join(f"{lo}-{hi}" for lo, hi in workers.relay_slices),
        )
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
            build_metrics_app(_metrics(node, workers, cluster)), access_log=None, handle_signals=False
        )
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, *config.metrics_listen).start()
        logger.info("listening on tcp %s:%d: Prometheus metrics at /metrics", *config.metrics_listen)

    def reload_certificates() -> None:
        try:
            files = _tls_files(config)
            ssl_context.load_cert_chain(*files)
            if workers is not None:
                workers.reload_tls(ipc.TlsFiles(*map(str, files)))
            logger.info("TLS certificates reloaded")
        except (OSError, ssl.SSLError) as exc:
            logger.error("TLS certificate reload failed, keeping the old one: %s", exc)

    def terminate() -> None:
        # docs/cluster.md "Drain": in a cluster the first SIGTERM drains, a second one stops.
        if config.cluster and not cluster.draining:
            cluster.drain("SIGTERM")
        else:
            stop.set()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_certificates)
    service.dispatch([])  # arms the timer for the restored rooms' resume windows
    cluster.start(config.drain_timeout)
    drained = asyncio.ensure_future(cluster.drained.wait())
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()), drained], return_when=asyncio.FIRST_COMPLETED)
    finally:
        logger.info("stopping")
        drained.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        tcp.close()

        async def shut_down() -> None:
            # Clients are told the server restarts (1012) and the rooms' state is written before
            # anything else closes: that is what resuming needs. Then the node leaves the cluster.
            await service.close()
            closing = [http.close(), cluster.close(), *([metrics_runner.cleanup()] if metrics_runner else [])]
            if workers is not None:
                closing.append(workers.close())
            await asyncio.gather(*closing)

        try:
            await asyncio.wait_for(shut_down(), config.shutdown_timeout)
        except TimeoutError:
            logger.warning("shutdown did not finish in %.0f s", config.shutdown_timeout)
        rooms.close()
        await store.close()


async def _listen_single(config: ServeConfig, service: NodeService) -> int:
    """One process: bind the two UDP ports and serve them; the second one's number."""
    turn, conference = service.node.turn, service.node.conference
    assert turn is not None and conference is not None
    udp_sock = socket.socket(socket.AF_INET6 if ":" in config.listen else socket.AF_INET, socket.SOCK_DGRAM)
    enlarge_udp_buffers(udp_sock, MAIN_UDP_BUFFER_BYTES)
    udp_sock.bind((config.listen, config.port))
    await service.listen_udp(ServerPort.MAIN, udp_sock)
    other_sock = bind_other_port(
        config.listen, config.other_udp_port, config.relay_ports, fixed=config.other_udp_port_fixed
    )
    other_port: int = other_sock.getsockname()[1]
    await service.listen_udp(ServerPort.OTHER, other_sock)
    turn.policy.allow_server_port(other_port)  # the relay's hop to the SFU
    conference.addresses = sfu_addresses(config, other_port)
    return other_port


def _metrics(node: NodeCore, workers: MediaWorkers | None, cluster: Cluster) -> Callable[[], Awaitable[str]]:
    """What ``/metrics`` shows: this process's cores (or, with workers, every process's, summed)
    and the cluster link's."""

    async def render() -> str:
        own = (
            await workers.metrics()
            if workers is not None
            else render_metrics(node.turn, node.signaling, node.conference)
        )
        return own + render_named_metrics(cluster.metrics())

    return render


def serve(config: ServeConfig) -> int:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logger.info("meet443 starting: %s", config.redacted())
    check_descriptor_limit(config, raise_descriptor_limit())
    if (warning := ip_literal_warning(config.public_url)) is not None:
        logger.warning("%s", warning)
    uvloop.run(run(config))
    return 0
