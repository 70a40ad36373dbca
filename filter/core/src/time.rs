//! UTC calendar arithmetic for SigV4 timestamps, without a date library.
//!
//! The wasm host only gives us "nanoseconds since the Unix epoch"; SigV4 needs
//! `YYYYMMDD` and `YYYYMMDD'T'HHMMSS'Z'`. The conversion is the classic
//! days-from-civil / civil-from-days arithmetic on a proleptic Gregorian calendar.

/// A UTC instant broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcDateTime {
    pub fn from_unix_seconds(seconds: u64) -> Self {
        let days = (seconds / 86_400) as i64;
        let second_of_day = (seconds % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcDateTime {
            year,
            month,
            day,
            hour: second_of_day / 3600,
            minute: second_of_day / 60 % 60,
            second: second_of_day % 60,
        }
    }

    /// `20150830`: the date part of a SigV4 credential scope.
    pub fn amz_date_stamp(&self) -> String {
        let mut out = String::with_capacity(8);
        self.push_date(&mut out);
        out
    }

    /// `20150830T123600Z`: the `x-amz-date` header value.
    pub fn amz_timestamp(&self) -> String {
        // Written digit by digit: `format!` costs more than the rest of a signature's formatting in wasm.
        let mut out = String::with_capacity(16);
        self.push_date(&mut out);
        out.push('T');
        for field in [self.hour, self.minute, self.second] {
            push_padded(&mut out, u64::from(field), 2);
        }
        out.push('Z');
        out
    }

    fn push_date(&self, out: &mut String) {
        push_padded(out, u64::try_from(self.year).unwrap_or(0), 4);
        push_padded(out, u64::from(self.month), 2);
        push_padded(out, u64::from(self.day), 2);
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, value: u64, width: u32) {
    let digits = value.checked_ilog10().map_or(1, |log| log + 1).max(width);
    for place in (0..digits).rev() {
        let digit = value / 10u64.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Converts days since 1970-01-01 into (year, month, day).
fn civil_from_days(days_since_epoch: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a 400-year era.
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_sigv4_test_suite_timestamp() {
        // 2015-08-30T12:36:00Z, the timestamp of the AWS SigV4 test suite.
        let t = UtcDateTime::from_unix_seconds(1_440_938_160);
        assert_eq!(t.amz_timestamp(), "20150830T123600Z");
        assert_eq!(t.amz_date_stamp(), "20150830");
    }

    #[test]
    fn handles_epoch_leap_days_and_year_ends() {
        assert_eq!(UtcDateTime::from_unix_seconds(0).amz_timestamp(), "19700101T000000Z");
        assert_eq!(UtcDateTime::from_unix_seconds(951_782_400).amz_date_stamp(), "20000229");
        assert_eq!(UtcDateTime::from_unix_seconds(1_709_251_199).amz_timestamp(), "20240229T235959Z");
        assert_eq!(UtcDateTime::from_unix_seconds(1_798_761_599).amz_timestamp(), "20261231T235959Z");
        assert_eq!(UtcDateTime::from_unix_seconds(4_102_444_800).amz_date_stamp(), "21000101");
    }
}
