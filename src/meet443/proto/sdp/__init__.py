"""SDP (RFC 8866) for WebRTC: typed descriptions, attributes, and the SFU's offer/answer builders.

* :mod:`.attributes`: one frozen dataclass per ``a=`` attribute WebRTC uses, unknown ones verbatim;
* :mod:`.description`: :class:`SessionDescription` / :class:`MediaDescription` with ``parse`` and
  ``str``/``bytes`` (byte-exact round trip for browser output);
* :mod:`.codecs`: the per-payload-type view (rtpmap + fmtp + rtcp-fb) and H.264 profiles;
* :mod:`.negotiation`: the SFU's answer to a publisher and offer to a subscriber.
"""

from meet443.proto.sdp.description import MediaDescription, SessionDescription

__all__ = ["MediaDescription", "SessionDescription"]
