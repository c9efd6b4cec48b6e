"""CSV cells that are safe to open in a spreadsheet (issue 18, item 8).

Excel, LibreOffice and Google Sheets run a cell that starts with ``=``, ``+``, ``-``
or ``@`` (and, after a tab or carriage return, the same) as a formula: a user id or
an email written by anyone who can sign up could then fetch URLs or run commands on
the machine of whoever opens the export. Such a cell is written with a leading
apostrophe, which spreadsheets show as text and do not evaluate (OWASP's advice).
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """``value`` as a CSV cell a spreadsheet will not evaluate; non-text unchanged.

    Examples:
        >>> [cell(v) for v in ("=HYPERLINK(1)", "+91 98", "-5", "@SUM(A1)", "u1", None, 3)]
        ["'=HYPERLINK(1)", "'+91 98", "'-5", "'@SUM(A1)", 'u1', None, 3]
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def row(values: list[object]) -> list[object]:
    return [cell(v) for v in values]
