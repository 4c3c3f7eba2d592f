"""The agent: the long-running owner of one load-balancer instance."""
