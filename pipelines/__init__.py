"""The Beam graph of `emer build`: composite PTransforms around the plain-Python stages in transforms."""
