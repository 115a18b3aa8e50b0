"""The sending side of an association.

``send_queue``: what the application queued, per stream, and which stream goes next (the scheduler);
``outstanding``: what is in flight, what SACKs say of it, and what to retransmit; ``congestion``: how much may
be in flight (RFC 9260 §7.2); ``rtt``: the retransmission timeout (§6.3).
"""
