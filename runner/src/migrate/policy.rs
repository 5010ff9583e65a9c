//! Choosing a stop policy and codec setting by name.

use anyhow::{bail, Result};
use pagewire::policy::{DowntimeLimit, SmartStop, StopPolicy, XenClassic, XenToday};
use pagewire::{Config, Features};

/// The single-VM stop policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// CloudNet's Smart Stop (the default).
    SmartStop,
    /// Xen classic: 30 iterations, 3x memory sent, or fewer than 50 pages left.
    XenClassic,
    /// Xen today: 5 iterations or fewer than 50 pages.
    XenToday,
    /// QEMU-style: what is left fits in 300 ms at the measured bandwidth.
    DowntimeLimit,
}

impl Policy {
    /// All of them.
    pub const ALL: [Policy; 4] = [
        Policy::SmartStop,
        Policy::XenClassic,
        Policy::XenToday,
        Policy::DowntimeLimit,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::SmartStop => "smart-stop",
            Policy::XenClassic => "xen-classic",
            Policy::XenToday => "xen-today",
            Policy::DowntimeLimit => "downtime-limit",
        }
    }

    /// Looks a policy up by name.
    pub fn parse(s: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|p| p.name() == s) {
            Some(p) => Ok(p),
            None => bail!(
                "unknown stop policy {s:?}: use smart-stop, xen-classic, xen-today or downtime-limit"
            ),
        }
    }

    /// A fresh policy for a VM of `vm_pages` pages.
    pub fn build(self, vm_pages: u64, page_size: u32) -> Box<dyn StopPolicy + Send> {
        match self {
            Policy::SmartStop => Box::new(SmartStop::default()),
            Policy::XenClassic => Box::new(XenClassic::new(vm_pages)),
            Policy::XenToday => Box::new(XenToday::default()),
            Policy::DowntimeLimit => Box::new(DowntimeLimit::new(u64::from(page_size))),
        }
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
            assert_eq!(Policy::parse(p.name()).unwrap(), p);
            assert_eq!(p.build(100, 4096).name(), p.name());
        }
        assert!(Policy::parse("never").is_err());
        assert_eq!(Codec::parse("off").unwrap(), Codec::Off);
        assert!(Codec::parse("maybe").is_err());
        let (cfg, f) = Codec::Off.apply(Config::DEFAULT);
        assert!(!cfg.lz4 && !f.cbr && !f.delta);
        cfg.validate().unwrap();
    }
}
