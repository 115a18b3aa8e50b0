"""The sending side of an association.

``scheduler``: what the application queued, per stream, and which stream goes next (RFC 8260's schedulers: fcfs,
rr, prio, wfq; with I-DATA a chunk at a time, within a budget for messages in progress); ``send_queue``: the chunk
record and the lanes; ``outstanding``: what is in flight, what SACKs say of it, and what to retransmit;
``retransmission``: what SACKs and T3 do with it, PR-SCTP's abandoning and the (I-)FORWARD-TSN; ``rack``: loss
recovery beyond RFC 9260 after RACK-TLP (RFC 8985: time-based loss detection, the tail loss probe, undoing spurious
fast recoveries); ``congestion``: how much may be in flight (RFC 9260 §7.2); ``rtt``: the retransmission timeout
(§6.3).
"""
