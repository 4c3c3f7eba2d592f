"""Flow traces: the filter language shared by the CLI, the API and the console
(filter.py). Pure Python: no data plane, no agent."""
