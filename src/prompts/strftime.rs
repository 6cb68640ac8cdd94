//! A small `strftime` for the date chat templates print (`strftime_now("%d %b %Y")` in Llama 3.x
//! templates), without a date-time dependency.

/// A calendar date and time of day (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateDate {
    /// Year, e.g. 2024.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl TemplateDate {
    /// The date Llama 3.1's template uses when none is given ("26 Jul 2024"), at midnight.
    /// scalpel renders with this fixed date by default so that prompts, activations and
    /// directions are reproducible from one day to the next.
    pub const REPRODUCIBLE: TemplateDate =
        TemplateDate { year: 2024, month: 7, day: 26, hour: 0, minute: 0, second: 0 };

    /// The current date and time (UTC) from the system clock.
    pub fn now() -> TemplateDate {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        TemplateDate::from_unix_seconds(secs)
    }

    /// The date and time of a Unix timestamp (UTC).
    pub fn from_unix_seconds(secs: i64) -> TemplateDate {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let rest = secs.rem_euclid(86_400) as u32;
        TemplateDate { year, month, day, hour: rest / 3600, minute: rest / 60 % 60, second: rest % 60 }
    }

    /// Day of the week, 0 = Monday.
    fn weekday(&self) -> usize {
        // 1970-01-01 was a Thursday (index 3).
        (days_from_civil(self.year, self.month, self.day) + 3).rem_euclid(7) as usize
    }

    /// Day of the year, 1-based.
    fn ordinal(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) - days_from_civil(self.year, 1, 1) + 1
    }

    /// Format like Python's `strftime` for the directives templates use:
    /// `%Y %y %m %d %e %B %b %A %a %H %I %M %S %p %j %F %T %%`. Unknown directives are kept as written.
    pub fn format(&self, pattern: &str) -> String {
        let month_name = MONTHS[(self.month.clamp(1, 12) - 1) as usize];
        let weekday_name = WEEKDAYS[self.weekday()];
        let mut out = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('Y') => out.push_str(&self.year.to_string()),
                Some('y') => out.push_str(&format!("{:02}", self.year.rem_euclid(100))),
                Some('m') => out.push_str(&format!("{:02}", self.month)),
                Some('d') => out.push_str(&format!("{:02}", self.day)),
                Some('e') => out.push_str(&format!("{:>2}", self.day)),
                Some('B') => out.push_str(month_name),
                Some('b') | Some('h') => out.push_str(&month_name[..3]),
                Some('A') => out.push_str(weekday_name),
                Some('a') => out.push_str(&weekday_name[..3]),
                Some('H') => out.push_str(&format!("{:02}", self.hour)),
                Some('I') => out.push_str(&format!("{:02}", (self.hour + 11) % 12 + 1)),
                Some('M') => out.push_str(&format!("{:02}", self.minute)),
                Some('S') => out.push_str(&format!("{:02}", self.second)),
                Some('p') => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
                Some('j') => out.push_str(&format!("{:03}", self.ordinal())),
                Some('F') => out.push_str(&format!("{}-{:02}-{:02}", self.year, self.month, self.day)),
                Some('T') => out.push_str(&format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_round_trip_through_the_calendar() {
        for days in [-800_000i64, -1, 0, 59, 11_016, 19_930, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        let t = TemplateDate::from_unix_seconds(1_721_952_000 + 3 * 3600 + 4 * 60 + 5);
        assert_eq!(t.format("%F %T"), "2024-07-26 03:04:05");
    }

    #[test]
    fn formats_python_directives() {
        let d = TemplateDate::REPRODUCIBLE;
        assert_eq!(d.format("%d %b %Y"), "26 Jul 2024");
        assert_eq!(d.format("%A, %B %e %y (day %j) %I%p %% %Q"), "Friday, July 26 24 (day 208) 12AM % %Q");
    }
}
