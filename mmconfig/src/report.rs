//! What `mm-firstboot run --json` prints: the changes a converge made, the problems left for hands, and its outcome.

use serde::{Deserialize, Serialize};

/// Version of the report's layout; bump when a field changes meaning.
pub const VERSION: u32 = 1;

/// How a converge ended (a run that stopped prints an error and exits 4 instead of a report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// The node already matched its configuration.
    NothingToChange,
    /// Changes were made and the node serves them.
    Converged,
    /// Converged as far as possible; `problems` says what needs hands (exit 3).
    NeedsAttention,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub version: u32,
    pub fqdn: String,
    pub outcome: RunOutcome,
    /// Each change in the plan's own words, in the order it was made.
    pub changes: Vec<String>,
    /// One line each for remote hands; empty exactly when the outcome is not `needs-attention`.
    pub problems: Vec<String>,
    #[serde(default)]
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl RunReport {
    /// The outcome the changes and problems add up to.
    pub fn outcome_of(changes: &[String], problems: &[String]) -> RunOutcome {
        if !problems.is_empty() {
            RunOutcome::NeedsAttention
        } else if changes.is_empty() {
            RunOutcome::NothingToChange
        } else {
            RunOutcome::Converged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_outweigh_changes() {
        let some = ["x".to_string()];
        assert_eq!(RunReport::outcome_of(&[], &[]), RunOutcome::NothingToChange);
        assert_eq!(RunReport::outcome_of(&some, &[]), RunOutcome::Converged);
        assert_eq!(RunReport::outcome_of(&some, &some), RunOutcome::NeedsAttention);
        assert_eq!(RunReport::outcome_of(&[], &some), RunOutcome::NeedsAttention);
        assert_eq!(serde_json::to_string(&RunOutcome::NeedsAttention).unwrap(), "\"needs-attention\"");
    }
}
