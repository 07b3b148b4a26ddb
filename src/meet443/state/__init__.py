"""State a node keeps beyond its process: what resuming rooms after a restart needs."""
