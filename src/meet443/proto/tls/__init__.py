"""TLS, as far as the TCP port must read it before any handshake: the ClientHello."""
