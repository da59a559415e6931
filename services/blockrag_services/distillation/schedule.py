"""Schedule: when periodic distillation runs start.

Either an interval, a sequence of number + unit ("30m", "6h", "1d", "1h30m"; s, m, h, d), the
first run one interval after the platform starts; or a 5-field cron expression in local time,
"minute hour day-of-month month day-of-week", each field "*", numbers, ranges "a-b", lists
"a,b" and steps "*/n" or "a-b/n", months and weekdays also by three-letter name (Sunday is 0
or 7). When both day fields are restricted a day matching either one matches, as in cron.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from blockrag.errors import InvalidRequestError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"(?:\d+[smhd])+")
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
# (name, lowest, highest, names of lowest.. in order)
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_HORIZON_DAYS = 366 * 5  # long enough for Feb 29 on a given weekday


@dataclass(frozen=True)
class Schedule:
    expression: str
    interval_s: float | None = None  # an interval schedule
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    any_day: bool = True  # day of month is "*"
    any_weekday: bool = True  # day of week is "*"

    @classmethod
    def parse(cls, expression: str) -> Schedule | None:
        """The schedule of `expression`; None for "" (no schedule); InvalidRequestError with
        the reason for anything else that is not an interval or a cron expression."""
        text = expression.strip().lower()
        if not text:
            return None
        if _INTERVAL.fullmatch(text):
            seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", text))
            if seconds <= 0:
                raise InvalidRequestError(f"distillation schedule {expression!r}: the interval must be > 0")
            return cls(expression, interval_s=float(seconds))
        parts = text.split()
        if len(parts) != 5:
            raise InvalidRequestError(
                f"distillation schedule {expression!r} is neither an interval (30m, 6h, 1d) nor a 5-field cron "
                f"expression (minute hour day-of-month month day-of-week)")
        values = [_field(part, *spec, expression) for part, spec in zip(parts, _FIELDS)]
        weekdays = frozenset(d % 7 for d in values[4])
        schedule = cls(expression, None, *values[:4], weekdays, parts[2] == "*", parts[4] == "*")
        schedule.next_after(datetime.now().timestamp())  # a date that never comes is an error now
        return schedule

    def next_after(self, t: float) -> float:
        """The first start strictly after unix time t."""
        if self.interval_s is not None:
            return t + self.interval_s
        at = datetime.fromtimestamp(t).replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = at + timedelta(days=_HORIZON_DAYS)
        while at < end:
            if at.month not in self.months:
                at = (at.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(at):
                at = at.replace(hour=0, minute=0) + timedelta(days=1)
            elif at.hour not in self.hours:
                at = at.replace(minute=0) + timedelta(hours=1)
            elif at.minute not in self.minutes:
                at += timedelta(minutes=1)
            else:
                return at.timestamp()
        raise InvalidRequestError(f"distillation schedule {self.expression!r} never matches a date")

    def _day_matches(self, at: datetime) -> bool:
        day, weekday = at.day in self.days, (at.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday  # the unrestricted one matches every day
        return day or weekday


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...], expression: str) -> frozenset[int]:
    def value(token: str) -> int:
        if token in names:
            return low + names.index(token)
        if not token.isdigit() or not low <= int(token) <= high:
            raise InvalidRequestError(f"distillation schedule {expression!r}: {name} {token!r} is not in {low}-{high}")
        return int(token)

    out: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) < 1):
            raise InvalidRequestError(f"distillation schedule {expression!r}: bad step {step!r} in the {name} field")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (value(t) for t in span.split("-", 1))
        else:
            first = value(span)
            last = high if step else first
        if first > last:
            raise InvalidRequestError(f"distillation schedule {expression!r}: empty range {span!r} in the {name} field")
        out.update(range(first, last + 1, int(step or 1)))
    return frozenset(out)
