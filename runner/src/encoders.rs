//! Where a stream gets encoded: by the codec in this process, or by the offload firmware in
//! another process ([`crate::offload_host`]). Both write the same bytes for the same input
//! and configuration.

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use pagewire::{Config, Encoder, EncoderStats, Features};

use crate::offload_host::{FirmwareEncoder, FirmwareOptions};

/// A stream encoder: every call appends the finished stream bytes it has to `out`.
pub trait StreamEncoder {
    /// Encodes one page.
    fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Appends a blob (at most one page long: the offload ring carries a page at a time).
    fn append_blob(&mut self, tag: u32, data: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Ends the iteration; all of it is in `out` afterwards.
    fn end_iteration(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// Ends the stream; all of it is in `out` afterwards.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// Counters, exact after `end_iteration` and `finish`.
    fn stats(&self) -> EncoderStats;
    /// Switches LZ4 on the frames from the next one on (where the stream header allows
    /// it); returns whether it is on now. An encoder that cannot switch keeps its setting.
    fn set_lz4(&mut self, on: bool) -> bool;
    /// True while frames get LZ4.
    fn lz4(&self) -> bool;
}

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
        if !(self.firmware_timeout.is_finite() && self.firmware_timeout > 0.0) {
            bail!("--firmware-timeout must be a positive number of seconds");
        }
        let mut opts = FirmwareOptions::new(
            self.firmware
                .clone()
                .unwrap_or_else(crate::offload_host::default_firmware_path),
        );
        opts.timeout = Duration::from_secs_f64(self.firmware_timeout);
        opts.extra_args = self.firmware_args.clone();
        Ok(EncoderChoice::Firmware(opts))
    }
}

/// The codec's [`Encoder`] over storage this struct owns.
pub struct InProcessEncoder {
    /// Borrows `storage`; dropped before it (see `Drop`).
    enc: ManuallyDrop<Encoder<'static>>,
    /// From `Box::into_raw`, freed in `Drop`.
    storage: *mut [u8],
    out: Vec<u8>,
}

impl InProcessEncoder {
    /// An encoder for `cfg` with every feature on.
    pub fn new(cfg: Config) -> Result<Self> {
        Self::with_features(cfg, Features::ALL)
    }

    /// An encoder for `cfg` and `features`.
    pub fn with_features(cfg: Config, features: Features) -> Result<Self> {
        let storage = crate::buffer::zeroed(cfg.encoder_storage_len(), "encoder storage")?;
        let storage = Box::into_raw(storage.into_boxed_slice());
        // SAFETY: `storage` is a live, exclusively owned heap allocation that is freed only
        // in `Drop`, after the encoder that borrows it is gone; the reference is the only
        // access to it meanwhile.
        let mem: &'static mut [u8] = unsafe { &mut *storage };
        let mut enc = match Encoder::new(cfg, mem) {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: from `Box::into_raw` above; the failed `new` kept no reference.
                drop(unsafe { Box::from_raw(storage) });
                return Err(e.into());
            }
        };
        enc.set_features(features);
        Ok(InProcessEncoder {
            enc: ManuallyDrop::new(enc),
            storage,
            out: vec![0u8; cfg.max_output_len()],
        })
    }
}

impl Drop for InProcessEncoder {
    fn drop(&mut self) {
        // SAFETY: the encoder goes first, then the storage it borrowed, which came from
        // `Box::into_raw` in `new` and is freed exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.enc);
            drop(Box::from_raw(self.storage));
        }
    }
}

impl StreamEncoder for InProcessEncoder {
    fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.encode_page(pfn, page, &mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn append_blob(&mut self, tag: u32, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.append_blob(tag, data, &mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn end_iteration(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.end_iteration(&mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.finish(&mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn stats(&self) -> EncoderStats {
        *self.enc.stats()
    }

    fn set_lz4(&mut self, on: bool) -> bool {
        self.enc.set_lz4(on)
    }

    fn lz4(&self) -> bool {
        self.enc.lz4()
    }
}
