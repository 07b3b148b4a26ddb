"""Forwarding policy of meet443's SFU, without I/O (docs/STYLE.md §1).

Time comes in as ``now`` (seconds, any monotonic base); nothing here reads a clock, opens a socket
or draws random numbers (initial sequence numbers and timestamps are parameters).

- :mod:`.rewrite`: per-subscriber SSRC/sequence/timestamp (and VP8 picture ID) rewriting across
  simulcast switches
- :mod:`.retransmit`: the buffer that answers NACKs (RFC 4585 §6.2.1), RTX-wrapped (RFC 4588)
- :mod:`.keyframes`: PLI/FIR towards publishers, aggregated and throttled (RFC 4585, RFC 5104)
- :mod:`.layers`: the simulcast layer a subscriber gets, from its bandwidth and its wishes
- :mod:`.speaker`: the dominant speaker from RFC 6464 audio levels
- :mod:`.slots`: last-N, which tracks a subscriber's slots carry
- :mod:`.budget`: what a subscriber may be sent (REMB, probes, loss-based cap of
  draft-ietf-rmcat-gcc-02 §6)
- :mod:`.nack`: NACKs towards publishers for packets lost on the way in
- :mod:`.reports`: RFC 3550 reception statistics (RR) and sender statistics (SR)
- :mod:`.bitrate`: measured bitrates of incoming layers
- :mod:`.tracks`: the track and slot values the router takes and gives
- :mod:`.events`: what these state machines tell the caller
"""
