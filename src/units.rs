//! Human-readable durations (`"20ms"`, `"5s"`) and byte sizes (`"4MiB"`) for the TOML config.
//!
//! Both also accept a bare integer: milliseconds for a duration, bytes for a size. Also the
//! wall clock as Unix microseconds, the one time the proxy stamps rows and splits with.

use serde::{Deserialize, Deserializer, de};
use std::time::{Duration, SystemTime};

/// Microseconds since the Unix epoch, by this machine's clock.
pub fn unix_micros_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// A byte count read from `"4MiB"`, `"512KiB"`, `"100"` or a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(n) => Ok(ByteSize(n)),
            NumberOrText::Text(text) => text
                .parse::<bytesize::ByteSize>()
                .map(|size| ByteSize(size.as_u64()))
                .map_err(|e| de::Error::custom(format!("invalid size `{text}`: {e}"))),
        }
    }
}

/// Serde adapter for `Duration` fields: `#[serde(with = "crate::units::duration")]`.
pub mod duration {
    use super::NumberOrText;
    use serde::{Deserialize, Deserializer, de};
    use std::time::Duration;

    /// Reads `"20ms"`, `"1m 30s"` or a bare integer of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(ms) => Ok(Duration::from_millis(ms)),
            NumberOrText::Text(text) => humantime::parse_duration(&text)
                .map_err(|e| de::Error::custom(format!("invalid duration `{text}`: {e}"))),
        }
    }
}

/// Formats a duration for logs and messages the way the config spells it.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Sample {
        size: ByteSize,
        #[serde(with = "duration")]
        wait: Duration,
    }

    fn parse(text: &str) -> Result<Sample, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn sizes_and_durations_read_human_units() {
        let cases = [
            (
                "size = \"4MiB\"\nwait = \"20ms\"",
                4 << 20,
                Duration::from_millis(20),
            ),
            (
                "size = \"512KiB\"\nwait = \"5s\"",
                512 << 10,
                Duration::from_secs(5),
            ),
            ("size = 100\nwait = 250", 100, Duration::from_millis(250)),
        ];
        for (text, bytes, wait) in cases {
            let sample = parse(text).unwrap();
            assert_eq!(sample.size, ByteSize(bytes), "{text}");
            assert_eq!(sample.wait, wait, "{text}");
        }
    }

    #[test]
    fn bad_units_are_refused_with_the_value() {
        let err = parse("size = \"lots\"\nwait = \"1s\"").err().unwrap().to_string();
        assert!(err.contains("invalid size `lots`"), "{err}");
        let err = parse("size = 1\nwait = \"soon\"").err().unwrap().to_string();
        assert!(err.contains("invalid duration `soon`"), "{err}");
    }
}
