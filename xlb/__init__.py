"""xlb: XDP layer-4 load balancer and its operations console."""

__version__ = "0.1.0"
