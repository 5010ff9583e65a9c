//! Which encoder a run uses, and starting it.

use anyhow::Result;
use pagewire::{Config, Features};

use super::firmware::{FirmwareEncoder, FirmwareOptions};
use super::in_process::InProcessEncoder;
use super::stream::StreamEncoder;

/// Which encoder a replay or a migration uses.
#[derive(Debug, Clone, Default)]
pub enum EncoderChoice {
    /// The codec, in this process.
    #[default]
    InProcess,
    /// The offload firmware, as a separate process over shared memory.
    Firmware(FirmwareOptions),
}

impl EncoderChoice {
    /// Its name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            EncoderChoice::InProcess => "inprocess",
            EncoderChoice::Firmware(_) => "firmware",
        }
    }

    /// Starts an encoder for `cfg` with every feature on.
    pub fn start(&self, cfg: Config) -> Result<Box<dyn StreamEncoder>> {
        self.start_with(cfg, Features::ALL)
    }

    /// Starts an encoder for `cfg` and `features`.
    pub fn start_with(&self, cfg: Config, features: Features) -> Result<Box<dyn StreamEncoder>> {
        Ok(match self {
            EncoderChoice::InProcess => Box::new(InProcessEncoder::with_features(cfg, features)?),
            EncoderChoice::Firmware(opts) => {
                Box::new(FirmwareEncoder::start_with(cfg, features, opts)?)
            }
        })
    }
}
