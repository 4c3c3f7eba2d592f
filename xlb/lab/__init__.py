"""The lab: network namespaces, links and traffic that stay on this machine."""
