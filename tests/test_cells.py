"""A workbook cell as the sheet shows it (lorahelpers.cells.shown): Excel number formats for
numbers, dates and times, booleans as Excel shows them. No workbook needed."""

import datetime as dt

import pytest

from lorahelpers.cells import render_value, shown


@pytest.mark.parametrize("value, number_format, text", [
    (0.25, "0%", "25%"),
    (0.1234, "0.00%", "12.34%"),
    (1234.5, '#,##0.00 "EUR"', "1,234.50 EUR"),
    (1234.5, "#,##0.00 [$€-407]", "1,234.50 €"),
    (1234.5, "[$$-409]#,##0.00", "$1,234.50"),
    (1234567, "#,##0", "1,234,567"),
    (1234567, "#,##0,", "1,235"),  # a trailing comma shows thousands
    (3.14159, "0.00", "3.14"),
    (2.675, "0.00", "2.68"),  # half away from zero on the value as written, as Excel does
    (5, "0.0", "5.0"),
    (0.5, "#.##", ".5"),
    (7, "00000", "00007"),
    (123456789, "000-00-0000", "123-45-6789"),
    (42, '0 "items"', "42 items"),
    (12345.678, "0.00E+00", "1.23E+04"),
    (5, '"$"#,##0_);("$"#,##0)', "$5"),
    (-5, '"$"#,##0_);("$"#,##0)', "($5)"),  # the negative section, without a minus
    (-12.5, "0.0", "-12.5"),
    (-0.001, "0.00", "0.00"),
    (0, r'_(* #,##0.00_);_(* \(#,##0.00\);_(* "-"??_);_(@_)', "-"),  # accounting zero
    (-1234.567, r'_(* #,##0.00_);_(* \(#,##0.00\);_(* "-"??_);_(@_)', "(1,234.57)"),
    (3.0, "General", "3"),
    (0.1 + 0.2, "General", "0.3"),  # 15 significant digits, as Excel shows a stored double
    (1e-7, "General", "1E-07"),
    (0.5, "# ?/?", "0.5"),  # fractions are not rendered: the General form
])
def test_numbers_as_their_format_shows_them(value, number_format, text):
    assert shown(value, number_format) == text


@pytest.mark.parametrize("value, number_format, text", [
    (dt.datetime(2025, 6, 4), "dd.mm.yyyy", "04.06.2025"),
    (dt.datetime(2025, 6, 4), "yyyy-mm-dd", "2025-06-04"),
    (dt.datetime(2025, 6, 4), "d-mmm-yy", "4-Jun-25"),
    (dt.datetime(2025, 6, 4), "dddd, mmmm d, yyyy", "Wednesday, June 4, 2025"),
    (dt.datetime(2025, 6, 4), "[$-F800]dddd, mmmm dd, yyyy", "Wednesday, June 04, 2025"),
    (dt.datetime(2025, 6, 4), "mm-dd-yy", "2025-06-04"),  # built-in 14: the reader's locale
    (dt.datetime(2025, 6, 4, 13, 5), "m/d/yy h:mm", "2025-06-04 13:05"),  # built-in 22
    (dt.datetime(2025, 6, 4, 13, 5, 9), "yyyy-mm-dd hh:mm:ss", "2025-06-04 13:05:09"),
    (dt.datetime(2025, 6, 4), "YYYY-MM-DD HH:MM:SS", "2025-06-04 00:00:00"),  # pandas' own
    (dt.time(13, 5), "h:mm AM/PM", "1:05 PM"),
    (dt.time(7, 45, 30, 500000), "mm:ss.0", "45:30.5"),  # mm before ss is minutes
    (dt.timedelta(hours=30, minutes=5), "[h]:mm:ss", "30:05:00"),
    (dt.datetime(2025, 6, 4), "General", "2025-06-04"),
])
def test_dates_and_times_in_the_cells_format(value, number_format, text):
    assert shown(value, number_format) == text


def test_booleans_and_text_as_the_sheet_shows_them():
    assert (shown(True), shown(False)) == ("TRUE", "FALSE")
    assert shown("  007 ") == "  007 " and shown("None") == "None" and shown(None) == ""
    # read raw, the same cells are the values themselves (render_value: yes/no, ISO dates)
    assert (render_value(True), render_value(0.25)) == ("yes", "0.25")
