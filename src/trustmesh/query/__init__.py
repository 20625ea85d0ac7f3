"""The governed query gateway: read-only SQL over datasets by address, rewritten through each grant."""
