"""WebRTC data channels as a transport: WHIP-style signalling, ICE-lite, DTLS, our SCTP, DCEP."""
