//! The limits every call into a guest runs under, with their defaults and the source
//! options that override them.

use std::time::Duration;

use hakiri_core::schedule::Interval;

/// Per call: each `spec`, `discover` and `read` gets a fresh instance with these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel: roughly one unit per WebAssembly instruction.
    pub fuel: u64,
    /// Wall-clock time of one call, host requests included.
    pub deadline: Duration,
    /// The most linear memory the instance may hold, in bytes.
    pub memory: usize,
    /// Log bytes per second the guest may write; the excess is dropped and counted.
    pub log_bytes_per_sec: usize,
    /// Times a `read` the guest failed as rate-limited or transient is tried again.
    pub max_retries: u32,
    /// The first wait before a transient failure's retry, doubled each retry (a
    /// rate-limited one waits what the guest's retry-after says).
    pub retry_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Enough for the Python interpreter to decode a page of thousands of records.
            fuel: 20_000_000_000,
            deadline: Duration::from_secs(60),
            memory: 512 << 20,
            log_bytes_per_sec: 64 << 10,
            // As the native http connector's max_retries and retry_backoff_ms.
            max_retries: 5,
            retry_backoff: Duration::from_millis(250),
        }
    }
}

impl Limits {
    /// The limits with the options given (`fuel`, `timeout`, `memory`, `log_rate`,
    /// `max_retries`, `retry_backoff_ms`; their
    /// help is in [`crate::source::HOST_OPTIONS`]).
    pub fn from_options<'a>(
        mut get: impl FnMut(&str) -> Option<&'a str>,
    ) -> Result<Limits, String> {
        let mut l = Limits::default();
        if let Some(v) = get("fuel") {
            l.fuel = v.replace('_', "").trim().parse().map_err(|_| {
                format!(
                    "option 'fuel' is a whole number of fuel units, like 20000000000; got '{v}'"
                )
            })?;
        }
        if let Some(v) = get("timeout") {
            l.deadline = Interval::parse("option 'timeout'", v)
                .map_err(|e| e.to_string())?
                .duration;
        }
        if let Some(v) = get("memory") {
            l.memory = bytes("memory", v)?;
        }
        if let Some(v) = get("log_rate") {
            l.log_bytes_per_sec = bytes("log_rate", v)?;
        }
        if let Some(v) = get("max_retries") {
            l.max_retries = v.trim().parse().map_err(|_| {
                format!("option 'max_retries' is a whole number of retries, like 5; got '{v}'")
            })?;
        }
        if let Some(v) = get("retry_backoff_ms") {
            l.retry_backoff = Duration::from_millis(v.trim().parse().map_err(|_| {
                format!("option 'retry_backoff_ms' is a whole number of milliseconds, like 250; got '{v}'")
            })?);
        }
        Ok(l)
    }
}

/// A size like `512 MiB`, `64 KiB`, `1 GB` or a plain number of bytes.
fn bytes(option: &str, text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let scale: usize = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => usize::MAX,
    };
    match n.parse::<usize>() {
        Ok(n) if scale != usize::MAX => n
            .checked_mul(scale)
            .ok_or_else(|| format!("option '{option}' is too large: '{text}'")),
        _ => Err(format!(
            "option '{option}' is a size like '512 MiB', '64 KiB' or a number of bytes; got '{text}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_the_defaults_and_bad_values_say_the_form() {
        let opts = [
            ("fuel", "1_000"),
            ("timeout", "2 seconds"),
            ("memory", "64 MiB"),
            ("log_rate", "10"),
            ("max_retries", "2"),
            ("retry_backoff_ms", "40"),
        ];
        let l =
            Limits::from_options(|k| opts.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)).unwrap();
        assert_eq!(
            l,
            Limits {
                fuel: 1000,
                deadline: Duration::from_secs(2),
                memory: 64 << 20,
                log_bytes_per_sec: 10,
                max_retries: 2,
                retry_backoff: Duration::from_millis(40),
            }
        );
        assert_eq!(Limits::from_options(|_| None).unwrap(), Limits::default());
        let err = Limits::from_options(|k| (k == "memory").then_some("lots")).unwrap_err();
        assert!(err.contains("like '512 MiB'"), "{err}");
        let err = Limits::from_options(|k| (k == "fuel").then_some("-1")).unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        let err = Limits::from_options(|k| (k == "max_retries").then_some("many")).unwrap_err();
        assert!(err.contains("'max_retries' is a whole number"), "{err}");
    }
}
