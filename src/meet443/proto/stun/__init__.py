"""proto/stun"""
