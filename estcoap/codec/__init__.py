"""Sans-IO codecs for EST: bytes <-> typed values. Imports nothing else of the project."""
