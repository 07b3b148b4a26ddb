"""RTP/RTCP test vectors: wire bytes from RFC figures and from real senders, with their sources."""

from __future__ import annotations

# RFC 3550 §5.1 https://www.rfc-editor.org/rfc/rfc3550#section-5.1 — the fixed header laid out by
# hand: V=2 P=0 X=0 CC=2 | M=1 PT=96 | seq 0x1234 | ts 0x89ABCDEF | SSRC 0x01020304 |
# CSRC 0x0A0B0C0D, 0x11121314 | payload "abc".
RTP_WITH_CSRCS = bytes.fromhex("82e01234 89abcdef 01020304 0a0b0c0d 11121314") + b"abc"

# The same packet with RFC 3550 §5.1 padding: P=1, 4 padding bytes (the last one is the count).
RTP_WITH_PADDING = (
    bytes.fromhex("a2e01234 89abcdef 01020304 0a0b0c0d 11121314") + b"abc" + bytes.fromhex("00000004")
)

# RFC 8285 §4.2 figure https://www.rfc-editor.org/rfc/rfc8285#section-4.2 filled in: one-byte form,
# length=3; ID 1 L=0 (1 byte 0xAA), ID 2 L=1 (2 bytes BB CC), two padding bytes, ID 3 L=3 (4 bytes).
RFC8285_ONE_BYTE_BLOCK = bytes.fromhex("bede0003 10aa21bb cc000033 01020304")
RTP_RFC8285_ONE_BYTE = bytes.fromhex("90600001 00000002 deadbeef") + RFC8285_ONE_BYTE_BLOCK + b"payload"

# RFC 8285 §4.3 figure https://www.rfc-editor.org/rfc/rfc8285#section-4.3 filled in: two-byte form,
# length=3; ID 1 L=0, ID 2 L=1 (DD), one padding byte, ID 3 L=4 (01 02 03 04).
RFC8285_TWO_BYTE_BLOCK = bytes.fromhex("10000003 01000201 dd000304 01020304")
RTP_RFC8285_TWO_BYTE = bytes.fromhex("90600001 00000002 deadbeef") + RFC8285_TWO_BYTE_BLOCK + b"payload"

# VP8 (RFC 7741 §4.2-4.3) payloads as aiortc 1.16's Vp8Encoder (libvpx) packetised a 320x240 frame,
# first bytes: descriptor X=1 S=1 PID=0, I=1, 15-bit picture ID 0x3F6F; then the VP8 payload header
# (P=0: keyframe, followed by the start code 9D 01 2A and 320x240) ...
VP8_KEYFRAME_PAYLOAD = bytes.fromhex("9080bf6f 7013009d 012a4001 f000390d 00041c22")
# ... and the next frame (picture ID 0x3F70, P=1: interframe).
VP8_DELTA_PAYLOAD = bytes.fromhex("9080bf70 310b00e4 718823fc 56405f5c ffe06bd3")

# H.264 (RFC 6184) payloads from aiortc 1.16's H264Encoder (libx264), 640x480 noise:
# the first FU-A fragment of the IDR slice (FU indicator 0x7C: NRI=3 type 28; FU header 0x85:
# S=1 type 5), a middle fragment (0x05: S=0) and the first fragment of a non-IDR slice (0x81).
H264_FU_A_IDR_START = bytes.fromhex("7c858884 0f3c3181")
H264_FU_A_IDR_MIDDLE = bytes.fromhex("7c059f9c fc94bd63")
H264_FU_A_NON_IDR_START = bytes.fromhex("5c818888 133c3187")
# A STAP-A (RFC 6184 §5.7.1, type 24) carrying SPS (0x67) and PPS (0x68), sizes 4 and 3.
H264_STAP_A_SPS_PPS = bytes.fromhex("78000467 42c01f00 0368ce3c")

# Transport-wide CC feedback from pion/rtcp's tests
# https://github.com/pion/rtcp/blob/master/transport_layer_cc_test.go (draft-holmer-rmcat-transport-
# wide-cc-extensions-01 §3.1). "example6" of TestTransportLayerCC_Unmarshal, sent by a browser: a
# two-bit vector chunk, a run of 48 "not received", 5 small deltas and 1 large one, 1 padding byte.
TWCC_BROWSER = bytes.fromhex("afcd0007 9b74f61f 9371dcbc 853c0009 63f916b3 d5520030 9baa6aaa 7b010901")
# "example1" of TestTransportLayerCC_Marshal: one run-length chunk, one small delta (148 x 250 us).
TWCC_ONE_PACKET = bytes.fromhex("afcd0005 fa17fa17 43032fa0 00990001 3de80217 20019401")
# "example4": a run of 7 small deltas, 3 bytes of padding.
TWCC_RUN_OF_SEVEN = bytes.fromhex("afcd0007 fa17fa17 193dd8bb 00040007 10636e01 20074c24 24100c0c 10000003")
# "example5": a one-bit status vector (14 symbols, 4 received), 2 bytes of padding.
TWCC_ONE_BIT_VECTOR = bytes.fromhex("afcd0006 fa17fa17 193dd8bb 0001000e 10636d00 ba00100c 0c100002")
# "example7": no packets at all, no padding.
TWCC_EMPTY = bytes.fromhex("8fcd0004 9acb0442 00000000 00000000 00000000")

# REMB (draft-alvestrand-rmcat-remb-03 §2.2) "sent by Chrome while watching a 6Mb/s stream", from
# https://github.com/pion/rtcp/blob/master/receiver_estimated_maximum_bitrate_test.go:
# exponent 6, mantissa 139487 -> 8,927,168 bps, for SSRC 1215622422.
REMB_CHROME = bytes(
    [143, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 82, 69, 77, 66, 1, 26, 32, 223, 72, 116, 237, 22]
)
