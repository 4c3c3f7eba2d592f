"""The operations console: a Textual app over the agent API (xlb.api)."""
