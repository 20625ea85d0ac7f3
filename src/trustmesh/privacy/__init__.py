"""Privacy building blocks: Singapore identifier validation, and later masking and linkage."""
