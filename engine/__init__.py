"""brokerguard: a security gateway on the data path between streaming clients and their broker."""

__version__ = "0.1.0"
