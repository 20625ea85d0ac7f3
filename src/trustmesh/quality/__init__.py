"""Data quality from the contract: ODCS quality rules, sector benchmarks and schema checks, in one scan."""

from trustmesh.quality.compile import CompiledQuality, compile_quality
from trustmesh.quality.rules import QualityRule, dataset_rules
from trustmesh.quality.run import CheckResult, QualityReport, run_quality

__all__ = [
    "CheckResult",
    "CompiledQuality",
    "QualityReport",
    "QualityRule",
    "compile_quality",
    "dataset_rules",
    "run_quality",
]
