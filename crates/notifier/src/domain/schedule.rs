//! When to try again: the retry schedule (Svix's by default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
//! 10 h), spread by jitter so a receiver that comes back is not hit by every retry at once, and
//! a receiver's own `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses one duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 5s or 10m"))?;
    let millis = match unit.trim() {
        "ms" => value,
        "" | "s" => value * 1000.0,
        "m" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        "d" => value * 86_400_000.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?} (ms, s, m, h, d)")),
    };
    if !millis.is_finite() || millis < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_millis(millis as u64))
}

/// Parses a comma-separated schedule such as `5s,5m,30m`.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',').filter(|part| !part.trim().is_empty()).map(parse_duration).collect()
}

/// How deliveries are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Waits after the 1st, 2nd, … failed attempt; attempts = waits + 1.
    pub schedule: Vec<Duration>,
    /// 0.2: each wait is drawn between 80 % and 120 % of the scheduled one.
    pub jitter: f64,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// The wait after `failed` consecutive failed attempts (1 = the first failed), or `None`
    /// when the schedule is exhausted. `random` is uniform in [0, 1).
    pub fn next_delay(&self, failed: u32, random: f64) -> Option<Duration> {
        let base = *self.schedule.get(failed.checked_sub(1)? as usize)?;
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * random.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// The wait a receiver asked for, capped at `max_retry_after`.
    pub fn retry_after(&self, header: &str, now: DateTime<Utc>) -> Option<Duration> {
        parse_retry_after(header, now).map(|wait| wait.min(self.max_retry_after))
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some(Duration::from_secs_f64(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_parses_to_svix_waits() {
        let schedule = parse_schedule("5s,5m,30m,2h,5h,10h,10h").unwrap();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(
            schedule,
            [
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(1800),
                hours(2),
                hours(5),
                hours(10),
                hours(10)
            ]
        );
        assert_eq!(
            parse_schedule("100ms, 1.5s").unwrap(),
            [Duration::from_millis(100), Duration::from_millis(1500)]
        );
        assert!(parse_schedule("5x").is_err());
        assert!(parse_schedule("").unwrap().is_empty());
    }

    #[test]
    fn waits_follow_the_schedule_within_the_jitter_and_then_stop() {
        let policy = RetryPolicy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter: 0.2,
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(policy.max_attempts(), 3);
        assert_eq!(policy.next_delay(1, 0.0), Some(Duration::from_secs(4)));
        assert_eq!(policy.next_delay(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(policy.next_delay(2, 1.0), Some(Duration::from_secs(360)));
        assert_eq!(policy.next_delay(3, 0.5), None);
        assert_eq!(policy.next_delay(0, 0.5), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Fri, 27 Nov 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        let policy = RetryPolicy { schedule: vec![], jitter: 0.0, max_retry_after: Duration::from_secs(60) };
        assert_eq!(policy.retry_after("3600", now), Some(Duration::from_secs(60)));
    }
}
