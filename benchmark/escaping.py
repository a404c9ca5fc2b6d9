"""Text that leaves bench for another program is neutralised here: spreadsheet formulas in CSV.

(HTML and LaTeX escape in ``report.render``; rich markup is escaped where console tables are built;
matplotlib's mathtext is off for suite-provided labels in ``report.curves``.)
"""
from __future__ import annotations

import pandas as pd

# OWASP "CSV Injection": a cell starting with one of these is run as a formula by Excel, LibreOffice
# and Google Sheets (=cmd|' /C calc'!A0, @SUM(...), =HYPERLINK(...)). A leading apostrophe makes the
# spreadsheet show the text as it is.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> object:
    """``value``, with a leading ' when it is text a spreadsheet would run as a formula. Numbers
    (including negative ones) are left alone: they are written as numbers, not text."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (object, string and category columns) are neutralised."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or isinstance(out[col].dtype, (pd.CategoricalDtype, pd.StringDtype)):
            # (not Series.map: it re-infers the dtype, and ints beside None would print as 0.0)
            out[col] = pd.Series([spreadsheet_cell(v) for v in out[col]], index=out.index, dtype=object)
    return out
