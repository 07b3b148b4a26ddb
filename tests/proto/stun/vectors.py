"""STUN test vectors.

RFC 5769 (https://www.rfc-editor.org/rfc/rfc5769) §2.1-§2.4 and RFC 8489 Appendix B.1
(https://www.rfc-editor.org/rfc/rfc8489#appendix-B.1), transcribed from the RFC text.
"""

RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 §2.1 Sample Request (note: the USERNAME padding is three spaces, not zeros).
SAMPLE_REQUEST = bytes.fromhex(
    "00010058"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "80220010"
    "5354554e20746573"
    "7420636c69656e74"
    "00240004"
    "6e0001ff"
    "80290008"
    "932ff9b151263b36"
    "00060009"
    "6576746a3a683676"
    "59202020"
    "00080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004"
    "e57a3bcf"
)

# RFC 5769 §2.2 Sample IPv4 Response: 192.0.2.1 port 32853, SOFTWARE "test vector".
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"
    "7465737420766563"
    "746f7220"
    "00200008"
    "0001a147e112a643"
    "00080014"
    "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004"
    "c07d4c96"
)

# RFC 5769 §2.3 Sample IPv6 Response: 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"
    "7465737420766563"
    "746f7220"
    "00200014"
    "0002a147"
    "0113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014"
    "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004"
    "c8fb0b4c"
)

# RFC 5769 §2.4 Sample Request with Long-Term Authentication.
LONG_TERM_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
LONG_TERM_PASSWORD = "The\u00adM\u00aatr\u2168"  # "TheMatrIX" after SASLprep
LONG_TERM_NONCE = b"f//499k954d6OL34oL9FSTvy64sA"
LONG_TERM_REALM = "example.org"
SAMPLE_REQUEST_LONG_TERM = bytes.fromhex(
    "00010060"
    "2112a442"
    "78ad3433c6ad72c029da412e"
    "00060012"
    "e3839ee38388e383aae38383e382afe382b90000"
    "0015001c"
    "662f2f3439396b3935346436"
    "4f4c33346f4c394653547679"
    "36347341"
    "0014000b"
    "6578616d706c652e6f726700"
    "00080014"
    "f67024656dd64a3e02b8e0712e85c9a28ca89666"
)

# RFC 8489 Appendix B.1: USERHASH, NONCE, REALM, MESSAGE-INTEGRITY-SHA256.
SHA256_NONCE = b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
SAMPLE_REQUEST_LONG_TERM_SHA256 = bytes.fromhex(
    "00010088"
    "2112a442"
    "78ad3433c6ad72c029da412e"
    "001e0020"
    "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
    "00150029"
    "6f624d61744a6f7332414141"
    "43662f2f3439396b39353464"
    "364f4c33346f4c3946535476"
    "79363473"
    "41000000"
    "0014000b"
    "6578616d706c652e6f726700"
    "001c0020"
    "fd8c273860d2e18ebca4c89b6973befa7ee8ecc69e9642db326fab65a0b955ba"
)
