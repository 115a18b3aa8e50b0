"""The receiving side of an association.

``tracker``: which TSNs came, and the SACK that says so; ``reassembly``: the messages they make, and their cost.
"""
