"""Polish short dates as Polish offices write them, 07.12.2026 (Django's own: 07-12-2026)."""

SHORT_DATE_FORMAT = "d.m.Y"
SHORT_DATETIME_FORMAT = "d.m.Y H:i"
