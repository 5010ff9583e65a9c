//! Choosing a stop policy and codec setting by name.

use anyhow::{bail, Result};
use pagewire::{Config, Features};

/// The single-VM stop policies: the codec's one list.
pub use pagewire::policy::PolicyKind as Policy;

/// Looks a stop policy up by its name on the command line.
pub fn parse_policy(s: &str) -> Result<Policy> {
    match Policy::from_name(s) {
        Some(p) => Ok(p),
        None => bail!(
            "unknown stop policy {s:?}: use {}",
            Policy::ALL.map(|p| p.name()).join(", ")
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

    /// The encoder configuration and features for this setting, from a base configuration.
    pub fn apply(self, base: Config) -> (Config, Features) {
        match self {
            Codec::On => (base, Features::ALL),
            Codec::Off => (
                Config {
                    lz4: false,
                    cache_pages: 1,
                    ..base
                },
                Features {
                    cbr: false,
                    delta: false,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(parse_policy(p.name()).unwrap(), p);
        }
        let e = parse_policy("never").unwrap_err().to_string();
        assert!(
            e.contains("xen-classic, xen-today, downtime-limit, smart-stop"),
            "{e}"
        );
        assert_eq!(Codec::parse("off").unwrap(), Codec::Off);
        assert!(Codec::parse("maybe").is_err());
        let (cfg, f) = Codec::Off.apply(Config::DEFAULT);
        assert!(!cfg.lz4 && !f.cbr && !f.delta);
        cfg.validate().unwrap();
    }
}
