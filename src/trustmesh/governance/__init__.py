"""Federated computational governance: policies as code at three levels, evaluated on every product."""
