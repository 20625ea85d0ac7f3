"""The control-plane server: the REST API under /api/v1 and the server-rendered catalog UI, both over `Workspace`."""
