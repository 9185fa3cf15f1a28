"""Deterministic test material: the realistic corpus the reader is measured on."""
