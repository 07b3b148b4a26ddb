"""proto/turn"""
