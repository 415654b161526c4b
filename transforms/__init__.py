"""Stages: each module holds a plain-Python core (tests call it directly) and a thin Beam wrapper."""
