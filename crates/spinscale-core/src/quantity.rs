//! Kubernetes memory quantities (`128Mi`, `1Gi`, `512M`, `1e9`), the format of a pod's
//! `resources.limits.memory`.

/// Bytes in a kibibyte (`Ki`).
pub const KI: f64 = 1024.0;
/// Bytes in a mebibyte (`Mi`).
pub const MI: f64 = KI * 1024.0;
/// Bytes in a gibibyte (`Gi`).
pub const GI: f64 = MI * 1024.0;
/// Bytes in a tebibyte (`Ti`).
pub const TI: f64 = GI * 1024.0;

/// Bytes in the largest instance accepted: anything above is a typo.
const MAX_BYTES: f64 = TI;

/// Parses a memory quantity into bytes: a decimal number with an optional binary (`Ki`, `Mi`, `Gi`,
/// `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix, or an exponent (`1e9`). It must be above 0 and at
/// most 1Ti. The error completes "value "…" ".
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'));
    let (number, suffix) = s.split_at(split.unwrap_or(s.len()));
    let factor = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => KI,
        "Mi" => MI,
        "Gi" => GI,
        "Ti" => TI,
        _ => return Err(format!("has an unknown suffix {suffix:?} (use Ki, Mi, Gi, Ti, k, M, G or T, e.g. 128Mi)")),
    };
    let value: f64 = number.parse().map_err(|_| "is not a memory quantity (e.g. 128Mi, 1Gi, 512M)".to_string())?;
    let bytes = value * factor;
    if !(1.0..=MAX_BYTES).contains(&bytes) {
        return Err("is not a memory size from 1 byte to 1Ti".into());
    }
    Ok(bytes.round() as u64)
}

/// A size in bytes written in a config file as a number (`65536`) or a quantity (`"32Mi"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(ByteSize(n)),
            Written::Text(text) => {
                parse_memory(&text).map(ByteSize).map_err(|e| serde::de::Error::custom(format!("value {text:?} {e}")))
            }
        }
    }
}

impl ByteSize {
    /// The size as a `usize` (saturating on 32-bit targets).
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_and_plain_quantities() {
        assert_eq!(parse_memory("128Mi"), Ok(128 * 1024 * 1024));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(parse_memory("512M"), Ok(512_000_000));
        assert_eq!(parse_memory("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_memory(" 4096 "), Ok(4096));
        assert_eq!(parse_memory("1Ti"), Ok(1 << 40));
    }

    #[test]
    fn bad_quantities_say_why() {
        assert!(parse_memory("128MB").unwrap_err().contains("unknown suffix \"MB\""));
        assert!(parse_memory("Mi").unwrap_err().contains("not a memory quantity"));
        assert!(parse_memory("").unwrap_err().contains("not a memory quantity"));
        assert!(parse_memory("0").unwrap_err().contains("from 1 byte to 1Ti"));
        assert!(parse_memory("2Ti").unwrap_err().contains("from 1 byte to 1Ti"));
        assert!(parse_memory("-1Gi").unwrap_err().contains("from 1 byte"));
    }
}
