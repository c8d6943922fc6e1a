# Calendar arithmetic both runtimes agree on (no time zones, no floats).


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 for a proleptic Gregorian date."""
    y = year - 1 if month <= 2 else year
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def unix_from_fields(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second


def parse_iso(text: str) -> int:
    """Unix seconds from 'YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)'."""
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] not in "T " or (
        text[13] != ":" or text[16] != ":"
    ):
        raise ValueError("start must be ISO-8601 like 2026-01-01T00:00:00+05:30")
    year = int(text[0:4])
    month = int(text[5:7])
    day = int(text[8:10])
    hour = int(text[11:13])
    minute = int(text[14:16])
    second = int(text[17:19])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError("start has an out-of-range date or time field")
    rest = text[19:]
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i] in "0123456789":
            i += 1
        rest = rest[i:]
    offset = 0
    if rest in ("Z", "z"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
        if rest[0] == "-":
            offset = -offset
    else:
        raise ValueError("start needs a UTC offset such as +05:30 or Z")
    return unix_from_fields(year, month, day, hour, minute, second) - offset
