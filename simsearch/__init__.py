"""simsearch: audio fingerprint similarity search.

Data flows one way: decode (audio) -> extract (features) -> index and store
(index, store) -> match (matching) -> decide and serve (engine, api, cli).
"""

__version__ = "0.1.0"
