"""RTP and RTCP for the SFU: typed codecs (the test oracles) and in-place readers for the data path.

- :mod:`.packet`: RTP (RFC 3550 §5.1, RFC 8285 header extensions, RFC 4588 RTX, RFC 5761 §4 demux)
- :mod:`.extensions`: values of the header extensions the SFU reads (RFC 6464 audio level, ...)
- :mod:`.rtcp`: RTCP (RFC 3550 §6.4-6.6, RFC 4585 NACK/PLI, RFC 5104 FIR, REMB, transport-wide CC)
- :mod:`.codecs`: keyframe detection for VP8 (RFC 7741) and H.264 (RFC 6184)
- :mod:`.srtp`: RFC 5764 §4.2 keying material and a typed wrapper over pylibsrtp
- :mod:`.serial`: 16/32-bit serial number arithmetic (RFC 1982) and sequence unwrapping
"""
