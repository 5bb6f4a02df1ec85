//! The one place option values are checked, for the task runner (`plan.rs`) and `compare`
//! alike: each returns the value, or a one-line message naming the flag (a usage error,
//! exit status 2).

use std::time::Duration;

use poolrun::MAX_WORKERS;

/// The longest GIL switch interval accepted, in milliseconds (a minute).
pub(crate) const MAX_SWITCH_MS: f64 = 60_000.0;

/// A worker count: 1 to [`MAX_WORKERS`].
pub(crate) fn workers(flag: &str, n: usize) -> Result<usize, String> {
    match n {
        0 => Err(format!("{flag} 0: a pool needs at least 1 worker")),
        n if n > MAX_WORKERS => Err(format!(
            "{flag} {n}: too many workers (at most {MAX_WORKERS})"
        )),
        n => Ok(n),
    }
}

/// A GIL switch interval in milliseconds: more than 0, at most [`MAX_SWITCH_MS`].
pub(crate) fn switch_interval(flag: &str, ms: f64) -> Result<Duration, String> {
    if ms.is_finite() && ms > 0.0 && ms <= MAX_SWITCH_MS {
        Ok(Duration::from_secs_f64(ms / 1000.0).max(Duration::from_micros(1)))
    } else {
        Err(format!(
            "{flag} {ms}: must be more than 0 and at most {MAX_SWITCH_MS} milliseconds"
        ))
    }
}

/// A positive, finite number of seconds. A value too large for a deadline (`1e19`) is
/// accepted: pools treat a timeout that overflows the clock as "no deadline".
pub(crate) fn seconds(flag: &str, secs: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs > 0.0 && !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{flag} {secs}: must be a positive, finite number of seconds"
        )),
    }
}

/// A Slurm time limit as `sbatch --time` writes it: `MINUTES`, `MINUTES:SECONDS`,
/// `HOURS:MINUTES:SECONDS`, `DAYS-HOURS`, `DAYS-HOURS:MINUTES` or
/// `DAYS-HOURS:MINUTES:SECONDS`; positive.
pub(crate) fn slurm_time(flag: &str, text: &str) -> Result<Duration, String> {
    let bad = || {
        Err(format!(
            "{flag} {text:?}: not a Slurm time limit (MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
        ))
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (days, clock) = match text.trim().split_once('-') {
        Some((d, rest)) => match num(d) {
            Some(d) => (Some(d), rest),
            None => return bad(),
        },
        None => (None, text.trim()),
    };
    let parts: Option<Vec<u64>> = clock.split(':').map(num).collect();
    let Some(parts) = parts else { return bad() };
    // [a], [a, b], [a, b, c]: minutes, min:sec, h:m:s; after `D-`: hours, h:m, h:m:s.
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m.checked_mul(60),
        (None, [m, s]) => m.checked_mul(60).and_then(|v| v.checked_add(*s)),
        (None, [h, m, s]) | (Some(_), [h, m, s]) => h
            .checked_mul(3600)
            .and_then(|v| v.checked_add(m.checked_mul(60)?))
            .and_then(|v| v.checked_add(*s)),
        (Some(_), [h]) => h.checked_mul(3600),
        (Some(_), [h, m]) => h
            .checked_mul(3600)
            .and_then(|v| v.checked_add(m.checked_mul(60)?)),
        _ => return bad(),
    };
    let secs = secs.and_then(|v| v.checked_add(days.unwrap_or(0).checked_mul(86_400)?));
    match secs {
        Some(s) if s > 0 => Ok(Duration::from_secs(s)),
        Some(_) => Err(format!("{flag} {text:?}: must be positive")),
        None => bad(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_messages() {
        assert_eq!(workers("-j", 3), Ok(3));
        assert!(workers("-j", 0).unwrap_err().starts_with("-j 0"));
        assert!(workers("-j", 100_000).unwrap_err().contains("at most"));
        assert_eq!(
            switch_interval("--switch-interval", 0.5),
            Ok(Duration::from_micros(500))
        );
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            assert!(switch_interval("--switch-interval", bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("--timeout", 1.5), Ok(Duration::from_millis(1500)));
        assert!(
            seconds("--timeout", 1e19).is_ok(),
            "huge but finite: no deadline"
        );
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(seconds("--timeout", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slurm_times() {
        let t = |s| slurm_time("--time", s);
        assert_eq!(t("5"), Ok(Duration::from_secs(300)));
        assert_eq!(t("5:30"), Ok(Duration::from_secs(330)));
        assert_eq!(t("1:02:03"), Ok(Duration::from_secs(3723)));
        assert_eq!(t("2-3"), Ok(Duration::from_secs(2 * 86_400 + 3 * 3600)));
        assert_eq!(t("1-0:30"), Ok(Duration::from_secs(86_400 + 1800)));
        assert_eq!(t("1-0:0:1"), Ok(Duration::from_secs(86_401)));
        assert!(t("0").unwrap_err().contains("positive"));
        for bad in [
            "",
            "abc",
            "1:2:3:4",
            "-5",
            "1-",
            "5m",
            "99999999999999999999",
            "1-2-3",
        ] {
            assert!(t(bad).unwrap_err().starts_with("--time"), "{bad}");
        }
    }
}
