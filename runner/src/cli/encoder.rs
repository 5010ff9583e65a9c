//! `--encoder`, `--firmware` and friends, shared by `replay`, `send` and `demo`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use pagewire_runner::encoders::{default_firmware_path, EncoderChoice, FirmwareOptions};
use pagewire_runner::units::seconds;

/// The longest `--firmware-timeout`: an hour without progress is a hung firmware.
const MAX_FIRMWARE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The encoder options of `pagewire replay`, `send` and `demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Who encodes: `inprocess`, or `firmware` (the offload firmware in its own process,
    /// fed through the shared-memory rings).
    #[arg(long, value_name = "WHO", default_value = "inprocess", value_parser = ["inprocess", "firmware"])]
    pub encoder: String,
    /// The firmware binary [default: $PAGEWIRE_FIRMWARE, else
    /// firmware-example/target/release/pagewire-fw].
    #[arg(long, value_name = "PATH")]
    pub firmware: Option<PathBuf>,
    /// Seconds without progress before the firmware counts as hung and is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub firmware_timeout: f64,
    /// If the firmware crashes or hangs, encode in this process from that pass on (a new
    /// stream to a new decoder; replay only).
    #[arg(long)]
    pub fallback: bool,
    /// Extra firmware argument (its fault injection, e.g. `--crash-after 100`); repeatable.
    #[arg(
        long = "firmware-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        hide = true
    )]
    pub firmware_args: Vec<String>,
}

impl EncoderArgs {
    /// The encoder these options choose.
    pub fn choice(&self) -> Result<EncoderChoice> {
        if self.encoder == "inprocess" {
            if self.fallback || self.firmware.is_some() {
                bail!("--fallback and --firmware need --encoder firmware");
            }
            return Ok(EncoderChoice::InProcess);
        }
        let timeout = seconds(
            self.firmware_timeout,
            "--firmware-timeout",
            MAX_FIRMWARE_TIMEOUT,
        )?;
        if timeout.is_zero() {
            bail!("--firmware-timeout must be a positive number of seconds");
        }
        let mut opts =
            FirmwareOptions::new(self.firmware.clone().unwrap_or_else(default_firmware_path));
        opts.timeout = timeout;
        opts.extra_args = self.firmware_args.clone();
        Ok(EncoderChoice::Firmware(opts))
    }
}
