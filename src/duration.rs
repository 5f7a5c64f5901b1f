//! Durations as people write them in flags, configs and policies: Go's
//! `1h30m` and `90s`, or friendlier `1.5h` and `2 days`; never negative.

use std::time::Duration;

/// Parses `text`, or says what is wrong with it.
pub fn parse(text: &str) -> Result<Duration, String> {
    let span: jiff::Span = text.trim().parse().map_err(|err| format!("{err}"))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|err| err.to_string())?;
    Duration::try_from(duration).map_err(|_| "must not be negative".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_and_friendly_forms_and_no_negatives() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2 days"), Ok(Duration::from_secs(172_800)));
        assert!(parse("soon").is_err());
        assert_eq!(parse("-5m"), Err("must not be negative".to_owned()));
    }
}
