//! Values as a person reads them in a message or on a terminal, never in Rust's `Debug` form
//! (`.ci/checks` refuses `{:?}` in output).

use std::time::Duration;

/// A duration as `humantime` writes it ("30s", "1s 250ms"), rounded up to the millisecond so
/// that a measured one does not end in microseconds and nanoseconds.
pub fn duration(duration: Duration) -> humantime::FormattedDuration {
    let millis = u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(duration(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(
            duration(Duration::from_nanos(1_234_000_001)).to_string(),
            "1s 235ms"
        );
        assert_eq!(duration(Duration::from_micros(10)).to_string(), "1ms");
        assert_eq!(duration(Duration::ZERO).to_string(), "0s");
    }
}
