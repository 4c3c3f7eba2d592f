"""The key footer, without the memory Textual's Footer keeps from every change of keys.

Footer recomposes whenever the keys change (every view switch: each view has
its own), and binds each new key's `compact` to the footer with data_bind.
Textual forgets a binding only when the footer's `compact` changes, which it
never does here: every removed key stayed alive (about 15 per switch, RSS up
~1.7 MiB a minute while switching views every 10 s). After each recompose
this footer forgets the bindings of keys that were removed.
"""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    async def recompose(self) -> None:
        await super().recompose()
        # textual.reactive keeps a node's watchers in its "__watchers" attribute
        for watchers in getattr(self, "__watchers", {}).values():
            watchers[:] = [(node, callback) for node, callback in watchers
                           if not (node._closing or node._closed)]
