"""Access: principals, the request → approve → grant workflow, Cedar decisions, API tokens."""
