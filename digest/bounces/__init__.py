"""Bounces and complaints: the per-delivery return path, reading reports, acting on them, IMAP fetch."""

from digest.bounces.ingest import BounceProcessor, IngestResult, TryLater, return_path_for
from digest.bounces.parse import Failure, FailureKind, Report, ReportKind, classify_status, parse_report
from digest.bounces.verp import ReturnPath, Verdict

__all__ = [
    "BounceProcessor",
    "Failure",
    "FailureKind",
    "IngestResult",
    "Report",
    "ReportKind",
    "ReturnPath",
    "TryLater",
    "Verdict",
    "classify_status",
    "parse_report",
    "return_path_for",
]
