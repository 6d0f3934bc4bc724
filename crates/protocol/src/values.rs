//! Small value types shared by the signed objects: timestamps, amounts, digests, nonces.
//! Each has exactly one spelling in JSON, so canonical JSON of a signed object is unique.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("timestamp {0:?} is not RFC 3339 UTC with milliseconds (YYYY-MM-DDTHH:MM:SS.mmmZ)")]
    BadTimestamp(String),
    #[error("timestamp out of range")]
    TimestampOutOfRange,
    #[error("amount {0:?} is not a canonical decimal integer")]
    BadAmount(String),
    #[error("digest must be 64 lowercase hex characters")]
    BadDigest,
    #[error("nonce must be 32 lowercase hex characters")]
    BadNonce,
}

/// A point in time with millisecond precision, always UTC, written `2026-11-22T10:15:30.123Z`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// The last millisecond of year 9999, so that every timestamp prints in the fixed-width form.
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// Milliseconds since the Unix epoch; refuses times before 1970 or after 9999.
    pub fn from_unix_ms(ms: i64) -> Result<Self, ValueError> {
        if (0..=MAX_TIMESTAMP_MS).contains(&ms) {
            Ok(Self(ms))
        } else {
            Err(ValueError::TimestampOutOfRange)
        }
    }

    pub fn now() -> Self {
        let ns = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let ms = i64::try_from(ns / 1_000_000).unwrap_or(MAX_TIMESTAMP_MS);
        Self(ms.clamp(0, MAX_TIMESTAMP_MS))
    }

    pub fn unix_ms(&self) -> i64 {
        self.0
    }

    /// This time plus `ms` milliseconds, saturating at the representable range.
    pub fn plus_ms(&self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms).clamp(0, MAX_TIMESTAMP_MS))
    }

    fn datetime(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.datetime();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::BadTimestamp(s.chars().take(40).collect());
        let b = s.as_bytes();
        let shape_ok = b.len() == 24
            && b.iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'.',
                23 => c == b'Z',
                _ => c.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(bad());
        }
        let num = |from: usize, to: usize| -> u32 {
            b[from..to]
                .iter()
                .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
        };
        let year = i32::try_from(num(0, 4)).map_err(|_| bad())?;
        let month = Month::try_from(u8::try_from(num(5, 7)).map_err(|_| bad())?).map_err(|_| bad())?;
        let date = Date::from_calendar_date(year, month, u8::try_from(num(8, 10)).map_err(|_| bad())?)
            .map_err(|_| bad())?;
        let time = Time::from_hms_milli(
            u8::try_from(num(11, 13)).map_err(|_| bad())?,
            u8::try_from(num(14, 16)).map_err(|_| bad())?,
            u8::try_from(num(17, 19)).map_err(|_| bad())?,
            u16::try_from(num(20, 23)).map_err(|_| bad())?,
        )
        .map_err(|_| bad())?;
        let t = PrimitiveDateTime::new(date, time).assume_offset(UtcOffset::UTC);
        let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?;
        Self::from_unix_ms(ms)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount of micro-credits (1 credit = 1,000,000). A decimal string in JSON, because canonical JSON
/// would silently round integers above 2^53 - 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

/// Micro-credits in one credit.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn micros(&self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

impl FromStr for Amount {
    type Err = ValueError;
    /// Canonical decimal only: an optional `-`, no `+`, no leading zeros, no `-0`.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::BadAmount(s.chars().take(40).collect());
        let digits = s.strip_prefix('-').unwrap_or(s);
        let canonical = !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && s != "-0";
        if !canonical {
            return Err(bad());
        }
        s.parse::<i64>().map(Amount).map_err(|_| bad())
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 digest, 64 lowercase hex characters in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        crate::keys::decode_hex_array::<32>(s)
            .map(Self)
            .map_err(|_| ValueError::BadDigest)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// 16 random bytes, 32 lowercase hex characters: makes otherwise equal signed objects distinct.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        Self(bytes)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.0))
    }
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        crate::keys::decode_hex_array::<16>(&s)
            .map(Nonce)
            .map_err(|_| serde::de::Error::custom(ValueError::BadNonce))
    }
}
