"""Graph surgery: extract, set-outputs, rename, sanitize (surgeon.py), each result proven."""
