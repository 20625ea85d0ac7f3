"""Lineage: column-level edges from product SQL, privacy along them, and OpenLineage events."""
