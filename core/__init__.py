"""The bottom layer: errors, paths, hashing, failure rows and config types every layer may use."""
