"""Estonian date and time formats Django's own locale leaves out (issue 14, item 5): without
them a date-time falls back to the US default, "12/07/2026 2:55 e.l."."""

DATETIME_FORMAT = "j. F Y H:i"
SHORT_DATETIME_FORMAT = "d.m.Y H:i"
YEAR_MONTH_FORMAT = "F Y"
FIRST_DAY_OF_WEEK = 1  # Monday
NUMBER_GROUPING = 3
