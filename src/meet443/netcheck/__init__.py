"""``meet443 check``: which paths of the network contract work from here, and which media path wins.

* :mod:`.results` -- one check's outcome (:class:`~.results.CheckResult`) and burst statistics: pure.
* :mod:`.verdict` -- best media path, peer-to-peer, advice, table and JSON: pure functions.
* :mod:`.wire` -- the bytes of HTTP/1.1, WebSocket frames and HTTP CONNECT: pure.
* :mod:`.streams` -- TCP and TLS connections, direct or through an HTTP CONNECT proxy: asyncio.
* :mod:`.probes` -- one coroutine per check: thin asyncio code over the above and the sans-I/O TURN
  client (:mod:`meet443.proto.turn.client`).
* :mod:`.progress` -- the live display on stderr.
* :mod:`.run` -- runs the probes and prints the report.
"""
