"""Measurements of this package against the classic way of running the coursework."""
