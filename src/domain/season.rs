//! Leaderboard seasons (API.md "Leaderboard seasons and around-me"): which
//! season a moment belongs to, for a product's `period`, in UTC.
//!
//! A season is named by its id (`2026-11-23` daily, `2026-W48` weekly by ISO
//! week, `2026-11` monthly) and spans `[starts_ms, ends_ms)`. The stats
//! consumer asks for the season of each `game_over`'s append time, so the
//! result never depends on when the event is applied.

use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, Month, OffsetDateTime, Time};

/// How long a season lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

/// The names `[games.season] period` may take.
pub const PERIODS: [&str; 3] = ["daily", "weekly", "monthly"];

/// One season of a product's board.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Season {
    pub id: String,
    /// Start, Unix milliseconds (inclusive).
    pub starts_ms: i64,
    /// End, Unix milliseconds (exclusive).
    pub ends_ms: i64,
}

fn midnight_ms(date: Date) -> i64 {
    let at = date.with_time(Time::MIDNIGHT).assume_utc();
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

impl Period {
    /// The period called `name` (`daily`, `weekly`, `monthly`).
    pub fn parse(name: &str) -> Option<Period> {
        match name {
            "daily" => Some(Period::Daily),
            "weekly" => Some(Period::Weekly),
            "monthly" => Some(Period::Monthly),
            _ => None,
        }
    }

    /// The season holding the moment `ts_ms` (Unix milliseconds, UTC).
    pub fn season_of(self, ts_ms: i64) -> Season {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let date = at.date();
        let (id, first, next) = match self {
            Period::Daily => (
                format!(
                    "{:04}-{:02}-{:02}",
                    date.year(),
                    date.month() as u8,
                    date.day()
                ),
                date,
                date.next_day().unwrap_or(Date::MAX),
            ),
            Period::Weekly => {
                let (year, week, weekday) = date.to_iso_week_date();
                let monday = date - Duration::days(i64::from(weekday.number_days_from_monday()));
                (
                    format!("{year:04}-W{week:02}"),
                    monday,
                    monday.checked_add(Duration::days(7)).unwrap_or(Date::MAX),
                )
            }
            Period::Monthly => {
                let first = Date::from_calendar_date(date.year(), date.month(), 1).unwrap_or(date);
                let (year, month) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    m => (date.year(), m.next()),
                };
                let next = Date::from_calendar_date(year, month, 1).unwrap_or(Date::MAX);
                (
                    format!("{:04}-{:02}", date.year(), date.month() as u8),
                    first,
                    next,
                )
            }
        };
        Season {
            id,
            starts_ms: midnight_ms(first),
            ends_ms: midnight_ms(next),
        }
    }
}

/// `ms` (Unix milliseconds) as RFC 3339 UTC, e.g. `2026-11-23T00:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix milliseconds of a UTC date and time.
    fn ms(y: i32, m: u8, d: u8, h: u8, min: u8) -> i64 {
        let date = Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap();
        let at = date
            .with_time(Time::from_hms(h, min, 0).unwrap())
            .assume_utc();
        (at.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn weekly_seasons_are_iso_weeks_from_monday() {
        let sunday_night = Period::Weekly.season_of(ms(2026, 11, 22, 23, 59));
        let monday = Period::Weekly.season_of(ms(2026, 11, 23, 0, 0));
        assert_eq!(sunday_night.id, "2026-W47");
        assert_eq!(monday.id, "2026-W48");
        assert_eq!(monday.starts_ms, ms(2026, 11, 23, 0, 0));
        assert_eq!(monday.ends_ms, ms(2026, 11, 30, 0, 0));
        assert_eq!(sunday_night.ends_ms, monday.starts_ms);
        assert_eq!(rfc3339(monday.starts_ms), "2026-11-23T00:00:00Z");
        let new_year = Period::Weekly.season_of(ms(2027, 1, 1, 12, 0));
        assert_eq!(
            new_year.id, "2026-W53",
            "1 Jan 2027 is in ISO week 53 of 2026"
        );
        let late = Period::Weekly.season_of(ms(2024, 12, 30, 0, 0));
        assert_eq!(late.id, "2025-W01", "30 Dec 2024 is in ISO week 1 of 2025");
    }

    #[test]
    fn daily_and_monthly_seasons() {
        let day = Period::Daily.season_of(ms(2026, 11, 23, 17, 5));
        assert_eq!(day.id, "2026-11-23");
        assert_eq!(
            (day.starts_ms, day.ends_ms),
            (ms(2026, 11, 23, 0, 0), ms(2026, 11, 24, 0, 0))
        );
        let december = Period::Monthly.season_of(ms(2026, 12, 31, 23, 59));
        assert_eq!(december.id, "2026-12");
        assert_eq!(
            (december.starts_ms, december.ends_ms),
            (ms(2026, 12, 1, 0, 0), ms(2027, 1, 1, 0, 0))
        );
        assert_eq!(
            Period::Monthly.season_of(ms(2027, 1, 1, 0, 0)).id,
            "2027-01"
        );
    }

    #[test]
    fn periods_by_name() {
        for name in PERIODS {
            assert!(Period::parse(name).is_some());
        }
        assert_eq!(Period::parse("hourly"), None);
    }
}
