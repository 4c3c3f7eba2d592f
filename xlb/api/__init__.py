"""The agent's API: `protocol` (the one schema) and `client` (the one client).

The only part of xlb the console imports. It loads neither the data plane nor
Textual, numpy, bcc or pyroute2.
"""
