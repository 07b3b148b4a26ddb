"""Signaling: validated messages and the room state machine (docs/signaling.md)."""
