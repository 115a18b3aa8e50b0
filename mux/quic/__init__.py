"""QUIC transport on aioquic's sans-IO ``QuicConnection``, with our own UDP endpoint."""
