"""The composition root: the CLI, the daemon, the HTTP app and the assembly of the tree.

It imports everything below it and nothing imports it. A new command, HTTP route
or wiring of a new actor goes here; the logic it wires lives in ``concierge.domain``,
the adapters (``store``, ``providers``, ``channels``) and ``actors``.
"""
