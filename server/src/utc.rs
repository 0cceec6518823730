//! UTC calendar time of a `SystemTime` and back, without a date crate: playlist dates
//! (EXT-X-PROGRAM-DATE-TIME, DASH times) and recording file names need only this.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC date and time of day, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub millis: u32,
}

impl Utc {
    /// The calendar fields of `t` (times before 1970 read as 1970-01-01).
    pub fn of(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis: d.subsec_millis(),
        }
    }

    /// The time these fields name (the inverse of [`Utc::of`]); before 1970 reads as 1970.
    pub fn to_system_time(self) -> SystemTime {
        let y = if self.month <= 2 { self.year - 1 } else { self.year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (self.month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = (days * 86_400 + self.hour * 3600 + self.minute * 60 + self.second).max(0) as u64;
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(u64::from(self.millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_time_and_back() {
        let t = UNIX_EPOCH + Duration::from_millis(1_772_409_845_123);
        let u = Utc::of(t);
        assert_eq!(
            (u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis),
            (2026, 3, 2, 0, 4, 5, 123)
        );
        assert_eq!(u.to_system_time(), t);
        assert_eq!(Utc::of(UNIX_EPOCH).to_system_time(), UNIX_EPOCH);
        // A leap day and the last second of a year.
        for secs in [951_782_400u64, 1_767_225_599] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(Utc::of(t).to_system_time(), t);
        }
    }
}
