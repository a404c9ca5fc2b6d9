"""The reporter: aggregation (pandas), tables, curves (matplotlib), claims and the tolerance check.

    results = build_tables(store, suites)          # one SuiteResults per suite
    write_reports(results, "reports", ["markdown", "html"])
    check_suite(store, suite).exit_code()          # 0 reproduces / holds, 1 differs / fails / unfinished, 3 inconclusive

Import-light on purpose: matplotlib is imported only when figures are drawn.
"""
from benchmark.report.aggregate import ReportError, SuiteResults, resolve_select, summarize
from benchmark.report.api import CheckResult, build_tables, check_results, check_suite, resolve_suites, write_reports
from benchmark.claims import ClaimError, ClaimResult, evaluate_claim, validate_claim

__all__ = [
    "CheckResult", "ClaimError", "ClaimResult", "ReportError", "SuiteResults", "build_tables",
    "check_results", "check_suite", "evaluate_claim", "resolve_select", "resolve_suites", "summarize",
    "validate_claim", "write_reports",
]
