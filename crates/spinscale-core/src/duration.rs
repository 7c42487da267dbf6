//! Go-style duration strings (`"1m30s"`, `"500ms"`, `"2.5s"`), the format KEDA users write.

use std::time::Duration;

use serde::Deserialize;

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal numbers, each with a unit
/// `ns`, `us`/`µs`, `ms`, `s`, `m` or `h`. A bare `0` is allowed; negative durations are not.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?} (use ms, s, m or h)"))?;
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| format!("invalid number {number:?} in duration {s:?}"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?} (use ms, s, m or h)")),
        };
        total += value * seconds_per_unit;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {s:?} is out of range"))
}

/// Formats a duration the way [`parse`] reads it back (`"1.5s"`, `"250ms"`).
pub fn format(d: Duration) -> String {
    if d.as_millis() < 1000 { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs_f64()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_go_accepts() {
        let cases = [
            ("0", Duration::ZERO),
            ("3s", Duration::from_secs(3)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("250us", Duration::from_micros(250)),
            (" 2s ", Duration::from_secs(2)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects_with_a_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("10", "missing unit"),
            ("5 minutes", "unknown unit"),
            ("-1s", "invalid number"),
            ("1..5s", "invalid number"),
            ("s", "invalid number"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [Duration::from_millis(250), Duration::from_millis(1500), Duration::from_secs(60)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}

/// A duration written as a Go duration string in YAML (`"30s"`), for config structs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(Dur).map_err(serde::de::Error::custom)
    }
}
