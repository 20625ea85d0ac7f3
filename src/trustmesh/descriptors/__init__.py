"""Descriptors: the mesh repo's files as typed models, loaded and checked against the standards."""

from trustmesh.descriptors.loader import load_mesh
from trustmesh.descriptors.models import (
    Column,
    Contract,
    DomainSpec,
    InputPort,
    Mesh,
    MeshConfig,
    OutputDataset,
    Person,
    Product,
    SourceSpec,
)

__all__ = [
    "Column",
    "Contract",
    "DomainSpec",
    "InputPort",
    "Mesh",
    "MeshConfig",
    "OutputDataset",
    "Person",
    "Product",
    "SourceSpec",
    "load_mesh",
]
