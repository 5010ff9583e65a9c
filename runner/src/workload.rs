//! The built-in workloads by name: `hot-set`, `database`, `compile` and `idle`. One list
//! for the whole runner: the simulator models each as a synthetic series
//! (`simulate::timeline`), the KVM guest program runs each for real (`vmm::boot`), under
//! the same names on every command line.

use anyhow::Result;

/// A built-in workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// A small hot set rewritten fast, like an in-memory Java application server.
    HotSet,
    /// Small writes spread over a large area, like a database buffer pool.
    Database,
    /// A compile-like mix whose write rate changes between busy and quiet phases.
    Compile,
    /// A mostly idle VM.
    Idle,
}

impl Workload {
    /// All of them, in report order.
    pub const ALL: [Workload; 4] = [
        Workload::HotSet,
        Workload::Database,
        Workload::Compile,
        Workload::Idle,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::HotSet => "hot-set",
            Workload::Database => "database",
            Workload::Compile => "compile",
            Workload::Idle => "idle",
        }
    }

    /// Looks a workload up by name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("unknown workload {s:?}: use hot-set, database, compile or idle")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()).unwrap(), w);
        }
        assert!(Workload::parse("nope").is_err());
    }
}
