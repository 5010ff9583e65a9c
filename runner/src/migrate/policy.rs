//! Choosing a stop policy and codec setting by name. The stop policies are the codec's one
//! list ([`PolicyKind`]); the codec settings map onto the runner's one list of stages
//! ([`CodecStages`]).

use anyhow::{bail, Result};
use pagewire::policy::PolicyKind;

use crate::settings::CodecStages;

/// Looks a stop policy up by its name on the command line.
pub fn parse_policy(s: &str) -> Result<PolicyKind> {
    match PolicyKind::from_name(s) {
        Some(p) => Ok(p),
        None => bail!(
            "unknown stop policy {s:?}: use {}",
            PolicyKind::ALL.map(|p| p.name()).join(", ")
        ),
    }
}

/// Codec on (everything pagewire has) or off (zero pages only, every other page raw, no
/// LZ4: about what a plain pre-copy migration sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    /// Zero pages, CBR, deltas, LZ4.
    On,
    /// Zero pages only.
    Off,
}

impl Codec {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Codec::On => "on",
            Codec::Off => "off",
        }
    }

    /// Looks a setting up by name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "on" => Ok(Codec::On),
            "off" => Ok(Codec::Off),
            _ => bail!("unknown codec setting {s:?}: use on or off"),
        }
    }

    /// The codec stages this setting runs.
    pub fn stages(self) -> CodecStages {
        match self {
            Codec::On => CodecStages::All,
            Codec::Off => CodecStages::ZeroPages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in PolicyKind::ALL {
            assert_eq!(parse_policy(p.name()).unwrap(), p);
        }
        let e = parse_policy("never").unwrap_err().to_string();
        assert!(
            e.contains("xen-classic, xen-today, downtime-limit, smart-stop"),
            "{e}"
        );
        assert_eq!(Codec::parse("off").unwrap(), Codec::Off);
        assert!(Codec::parse("maybe").is_err());
        let (cfg, f) = Codec::Off.stages().apply(pagewire::Config::DEFAULT);
        assert!(!cfg.lz4 && !f.cbr && !f.delta);
        cfg.validate().unwrap();
    }
}
