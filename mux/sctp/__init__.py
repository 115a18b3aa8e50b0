"""Userspace SCTP over UDP (RFC 9260, RFC 6951): wire codec, association core and endpoint."""
