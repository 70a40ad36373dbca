//! UTC timestamps for SigV4. The hosts give the time since the Unix epoch; SigV4 needs `YYYYMMDD`
//! and `YYYYMMDD'T'HHMMSS'Z'`. The `time` crate does the calendar; the formatting is written digit
//! by digit, which costs less than a format description (and `format!`) on every request.

use ::time::OffsetDateTime;

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
    /// Instants past what `time` represents (the year 9999) read as the epoch: no host clock says that.
    pub fn from_unix_seconds(seconds: u64) -> Self {
        let instant = i64::try_from(seconds)
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        UtcDateTime {
            year: i64::from(instant.year()),
            month: u32::from(u8::from(instant.month())),
            day: u32::from(instant.day()),
            hour: u32::from(instant.hour()),
            minute: u32::from(instant.minute()),
            second: u32::from(instant.second()),
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
        assert_eq!(
            UtcDateTime::from_unix_seconds(0).amz_timestamp(),
            "19700101T000000Z"
        );
        assert_eq!(
            UtcDateTime::from_unix_seconds(951_782_400).amz_date_stamp(),
            "20000229"
        );
        assert_eq!(
            UtcDateTime::from_unix_seconds(1_709_251_199).amz_timestamp(),
            "20240229T235959Z"
        );
        assert_eq!(
            UtcDateTime::from_unix_seconds(1_798_761_599).amz_timestamp(),
            "20261231T235959Z"
        );
        assert_eq!(
            UtcDateTime::from_unix_seconds(4_102_444_800).amz_date_stamp(),
            "21000101"
        );
    }
}
