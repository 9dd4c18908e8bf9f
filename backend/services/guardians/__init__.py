"""Guardians: parents linked to children read, instruct, report on, limit and erase."""
