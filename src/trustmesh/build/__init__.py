"""The build: land inputs as bronze, run each product's SQL, check against the contract, publish atomically."""

from trustmesh.build.runner import BuildContext, BuildResult, ProductResult, build

__all__ = ["BuildContext", "BuildResult", "ProductResult", "build"]
