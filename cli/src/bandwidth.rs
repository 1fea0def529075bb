//! `--limit-upload` / `--limit-download`: rates (`10M`, `500K`, `off`),
//! time-of-day schedules (`"08:00,10M 19:00,off"`, rclone's `--bwlimit`
//! syntax), and the task that keeps the engine's limiters on the schedule.

use coffer_engine::store::Limiter;
use std::sync::Arc;
use std::time::Duration;

/// A limit through the day: `(minute of the day, bytes/s)` sorted by minute; a
/// plain rate is one entry at 00:00. 0 = unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Vec<(u32, u64)>);

impl Schedule {
    /// The rate at `minute` of the day: the latest entry at or before it, else
    /// the day's last entry (still in force from the day before).
    pub fn rate_at(&self, minute: u32) -> u64 {
        let before = self.0.iter().rev().find(|(m, _)| *m <= minute);
        before.or(self.0.last()).map_or(0, |(_, r)| *r)
    }

    fn is_fixed(&self) -> bool {
        self.0.windows(2).all(|w| w[0].1 == w[1].1)
    }
}

/// Parses `--<flag> VALUE`; the error is the whole one-line message.
pub fn parse_limit(flag: &str, value: &str) -> anyhow::Result<Schedule> {
    parse_schedule(value).ok_or_else(|| {
        anyhow::anyhow!(
            "--{flag} {value:?}: expected a rate like 10M, 500K or off, \
             or a schedule like \"08:00,10M 19:00,off\""
        )
    })
}

fn parse_schedule(s: &str) -> Option<Schedule> {
    let s = s.trim();
    if !s.contains(',') {
        return Some(Schedule(vec![(0, parse_rate(s)?)]));
    }
    let mut entries = Vec::new();
    for entry in s.split_whitespace() {
        let (time, rate) = entry.split_once(',')?;
        let (h, m) = time.split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        entries.push((h * 60 + m, parse_rate(rate)?));
    }
    entries.sort_unstable();
    if entries.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(Schedule(entries))
}

/// Bytes per second from `10M`, `1.5M`, `500K`, `2G`, `4096`; `off`/`0` = 0
/// (unlimited). K, M, G are 1024-based.
pub fn parse_rate(s: &str) -> Option<u64> {
    if s.eq_ignore_ascii_case("off") {
        return Some(0);
    }
    let (number, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let scale = match unit {
        'B' => 1u64,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => return None,
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let bytes = number.parse::<f64>().ok()? * scale as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes.round() as u64)
}

/// Sets `limiter` to the schedule's rate now and, if the rate changes during
/// the day, at the start of every minute from now on (a task of the runtime).
pub fn follow(limiter: Arc<Limiter>, schedule: Schedule) {
    let (minute, second) = local_time_of_day();
    limiter.set_rate(schedule.rate_at(minute));
    if schedule.is_fixed() {
        return;
    }
    let mut wait = 60 - second.min(59);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(u64::from(wait))).await;
            let (minute, second) = local_time_of_day();
            limiter.set_rate(schedule.rate_at(minute));
            wait = 60 - second.min(59);
        }
    });
}

/// The local time of day: (minute of the day, second of the minute).
#[allow(unsafe_code)]
fn local_time_of_day() -> (u32, u32) {
    // SAFETY: `time` and `localtime_r` write only into the buffers given; a
    // zeroed `tm` is a valid value of the plain C struct.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    let (h, m, s) = (tm.tm_hour as u32, tm.tm_min as u32, tm.tm_sec as u32);
    ((h * 60 + m).min(24 * 60 - 1), s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_1024_based() {
        assert_eq!(parse_rate("10M"), Some(10 << 20));
        assert_eq!(parse_rate("500K"), Some(500 << 10));
        assert_eq!(parse_rate("500k"), Some(500 << 10));
        assert_eq!(parse_rate("1.5M"), Some(3 << 19));
        assert_eq!(parse_rate("2G"), Some(2 << 30));
        assert_eq!(parse_rate("4096"), Some(4096));
        assert_eq!(parse_rate("off"), Some(0));
        assert_eq!(parse_rate("0"), Some(0));
        for bad in ["", "12X", "M", "-1M", "1e9", "1..2M", "10 M"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn schedules_follow_the_clock_and_wrap_over_midnight() {
        let s = parse_schedule("08:00,10M 19:00,off").unwrap();
        assert_eq!(s.rate_at(7 * 60 + 59), 0, "before 08:00: yesterday's 19:00");
        assert_eq!(s.rate_at(8 * 60), 10 << 20);
        assert_eq!(s.rate_at(18 * 60 + 59), 10 << 20);
        assert_eq!(s.rate_at(19 * 60), 0);
        let plain = parse_schedule("5M").unwrap();
        assert_eq!(plain.rate_at(0), 5 << 20);
        assert!(plain.is_fixed() && !s.is_fixed());
        for bad in [
            "25:00,1M",
            "08:00,1X",
            "08:00",
            "08:00,1M 08:00,2M",
            "8h,1M",
        ] {
            assert_eq!(parse_schedule(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_are_one_line_naming_the_flag() {
        let e = parse_limit("limit-upload", "12X").unwrap_err().to_string();
        assert_eq!(
            e,
            "--limit-upload \"12X\": expected a rate like 10M, 500K or off, \
             or a schedule like \"08:00,10M 19:00,off\""
        );
    }
}
