"""End-to-end tests: independent TURN clients against the server under test, in network namespaces."""
