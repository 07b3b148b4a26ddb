"""Test lab: network namespaces, TURN servers under test and coturn's load tools.

Everything here starts processes inside network namespaces that the lab itself creates, so test
traffic can only reach loopback or the lab's own veth addresses (10.200.0.0/16). A `Lab` stops
exactly the processes it started (by PID) and deletes exactly the namespaces it created.
"""
