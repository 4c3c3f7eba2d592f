"""BGP: the agent's ExaBGP, and route health injection (a VIP is announced only while it
serves). settings.py: the [bgp] table; the speaker and the announcement rule live beside it."""
