//! Config value types that cannot hold a bad value: a field of one of these types is checked
//! when the file is read, and the refusal names the key (see `config::parse`).
//!
//! Adding a key is then one field with its type, a default and a doc comment.

use std::fmt;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An integer from `MIN` to `MAX` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bounded<const MIN: u64, const MAX: u64 = { u64::MAX }>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    /// `value` if it is in range; the error says the range.
    pub fn new(value: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value))
        } else if MAX == u64::MAX {
            Err(format!("must be at least {MIN}, not {value}"))
        } else {
            Err(format!("must be between {MIN} and {MAX}, not {value}"))
        }
    }

    /// For defaults: a value out of range is a bug in the code, caught by the config tests.
    pub const fn of(value: u64) -> Self {
        assert!(MIN <= value && value <= MAX, "default out of range");
        Self(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The value as a size or count in memory (every bound we use fits a `usize`).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for Bounded<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(u64::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl<const MIN: u64, const MAX: u64> Serialize for Bounded<MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A duration written as whole milliseconds (keys ending in `_ms`), at least `MIN` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis<const MIN: u64 = 0>(Bounded<MIN>);

impl<const MIN: u64> Millis<MIN> {
    pub const fn of(ms: u64) -> Self {
        Self(Bounded::of(ms))
    }

    pub const fn get(self) -> Duration {
        Duration::from_millis(self.0.get())
    }
}

impl<'de, const MIN: u64> Deserialize<'de> for Millis<MIN> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Bounded::deserialize(deserializer).map(Self)
    }
}

impl<const MIN: u64> Serialize for Millis<MIN> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A duration written as whole seconds (keys ending in `_seconds`), from `MIN` to `MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds<const MIN: u64 = 0, const MAX: u64 = { u64::MAX }>(Bounded<MIN, MAX>);

impl<const MIN: u64, const MAX: u64> Seconds<MIN, MAX> {
    pub const fn of(seconds: u64) -> Self {
        Self(Bounded::of(seconds))
    }

    pub const fn get(self) -> Duration {
        Duration::from_secs(self.0.get())
    }

    pub const fn as_secs(self) -> u64 {
        self.0.get()
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Seconds<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Bounded::deserialize(deserializer).map(Self)
    }
}

impl<const MIN: u64, const MAX: u64> Serialize for Seconds<MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A string that may not be empty (an issuer, a model name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct NonEmptyString(String);

impl NonEmptyString {
    /// For defaults and tests; an empty value is a bug in the code.
    pub fn of(value: &str) -> Self {
        assert!(!value.is_empty(), "empty default");
        Self(value.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NonEmptyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for NonEmptyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.is_empty() {
            return Err(D::Error::custom("must not be empty"));
        }
        Ok(Self(value))
    }
}

/// A header name, or `""` in the file for "switched off".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionalHeaderName(Option<http::HeaderName>);

impl OptionalHeaderName {
    pub fn of(name: &'static str) -> Self {
        Self(Some(http::HeaderName::from_static(name)))
    }

    pub fn off() -> Self {
        Self(None)
    }

    pub fn get(&self) -> Option<&http::HeaderName> {
        self.0.as_ref()
    }
}

impl<'de> Deserialize<'de> for OptionalHeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.is_empty() {
            return Ok(Self(None));
        }
        // `from_bytes` lowercases, so `X-Canary` and `x-canary` are the same header.
        http::HeaderName::from_bytes(value.as_bytes())
            .map(|name| Self(Some(name)))
            .map_err(|_| D::Error::custom("must be a header name, or empty to switch it off"))
    }
}

impl Serialize for OptionalHeaderName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_ref().map_or("", |name| name.as_str()))
    }
}

/// A header value checked when the file is read, or `""` in the file for "switched off".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionalHeaderValue(Option<http::HeaderValue>);

impl OptionalHeaderValue {
    pub fn of(value: &'static str) -> Self {
        Self(Some(http::HeaderValue::from_static(value)))
    }

    pub fn off() -> Self {
        Self(None)
    }

    pub fn get(&self) -> Option<&http::HeaderValue> {
        self.0.as_ref()
    }
}

impl<'de> Deserialize<'de> for OptionalHeaderValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.is_empty() {
            return Ok(Self(None));
        }
        http::HeaderValue::from_str(&value)
            .map(|value| Self(Some(value)))
            .map_err(|_| {
                D::Error::custom(
                    "must be a header value (visible ASCII), or empty to switch it off",
                )
            })
    }
}

impl Serialize for OptionalHeaderValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Only values read from a string or `of` a static str are held, so they are text.
        serializer.serialize_str(self.0.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde::Deserialize;

    use super::*;
    use crate::config::{ConfigError, parse};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        section: Section,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        #[serde(default = "default_size")]
        size: Bounded<1024>,
        #[serde(default)]
        ttl: Option<Bounded<60, 3600>>,
        #[serde(default)]
        timeout_ms: Option<Millis<10>>,
        #[serde(default)]
        name: Option<NonEmptyString>,
        #[serde(default)]
        header: Option<OptionalHeaderName>,
        #[serde(default)]
        value: Option<OptionalHeaderValue>,
    }

    fn default_size() -> Bounded<1024> {
        Bounded::of(4096)
    }

    fn parse_section(text: &str) -> Result<Section, ConfigError> {
        parse::<File>(text, Path::new("/etc/x.toml")).map(|file| file.section)
    }

    #[test]
    fn refusals_name_the_dotted_key_the_reason_and_the_line() {
        for (text, expected) in [
            (
                "[section]\nsize = 10\n",
                "/etc/x.toml: section.size: must be at least 1024, not 10 (line 2)",
            ),
            (
                "[section]\nttl = 5\n",
                "section.ttl: must be between 60 and 3600, not 5",
            ),
            (
                "[section]\ntimeout_ms = 1\n",
                "section.timeout_ms: must be at least 10",
            ),
            (
                "[section]\nname = \"\"\n",
                "section.name: must not be empty",
            ),
            (
                "[section]\nheader = \"a b\"\n",
                "section.header: must be a header name",
            ),
            (
                "[section]\nvalue = \"line\\nbreak\"\n",
                "section.value: must be a header value",
            ),
            ("[section]\nsize = \"big\"\n", "section.size: invalid type"),
            ("[section]\nsizes = 1\n", "unknown field `sizes`"),
        ] {
            let error = parse_section(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn valid_values_come_through_typed() {
        let section = parse_section(
            "[section]\nsize = 2048\nttl = 60\ntimeout_ms = 250\nname = \"n\"\nheader = \"X-Canary\"\n",
        )
        .unwrap();
        assert_eq!(section.size.get(), 2048);
        assert_eq!(
            section.timeout_ms.unwrap().get(),
            Duration::from_millis(250)
        );
        assert_eq!(section.header.unwrap().get().unwrap().as_str(), "x-canary");
        let off = parse_section("[section]\nheader = \"\"\nvalue = \"\"\n").unwrap();
        assert_eq!(off.header.unwrap().get(), None);
        assert_eq!(off.value.unwrap().get(), None);
        let value = parse_section("[section]\nvalue = \"no-referrer\"\n").unwrap();
        assert_eq!(value.value.unwrap().get().unwrap(), "no-referrer");
        assert_eq!(off.size.get(), 4096);
    }

    #[test]
    fn a_syntax_error_is_reported_as_such() {
        let error = parse_section("[section\nsize = 1").unwrap_err();
        assert_eq!(error.key(), "(syntax)");
        assert!(error.to_string().contains("TOML parse error"), "{error}");
    }
}
