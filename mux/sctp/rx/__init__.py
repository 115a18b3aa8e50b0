"""The receiving side of an association.

``tracker``: which TSNs came, and the SACK that says so; ``reassembly``: the messages DATA chunks make, and their
cost; ``interleaved``: the same for I-DATA (RFC 8260), whose messages interleave.
"""
