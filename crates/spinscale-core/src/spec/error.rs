//! Why metadata was refused: one [`Problem`] per bad key, gathered into an [`InvalidMetadata`]
//! together with hints about likely misspellings.

use std::fmt;

/// One bad key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key as the user wrote it (KEDA's alias if they used that); for a trigger without any
    /// signal source, `query|scrapeUrl|bootstrapServers`.
    pub key: String,
    /// What is wrong and what is allowed, e.g. `value "0" is not a number greater than 0`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything wrong with one trigger's metadata, plus hints about likely misspellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidMetadata {
    /// Every bad key, in the order they were read.
    pub problems: Vec<Problem>,
    /// Unknown keys that look like a known one misspelt (`did you mean …`); they are ignored.
    pub hints: Vec<String>,
}

impl fmt::Display for InvalidMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid scaler metadata: ")?;
        let all: Vec<String> = self.problems.iter().map(Problem::to_string).chain(self.hints.iter().cloned()).collect();
        write!(f, "{}", all.join("; "))
    }
}
