//! Stream encoders: where a stream gets encoded. The codec in this process
//! ([`InProcessEncoder`]), or the offload firmware in its own process over shared memory
//! ([`FirmwareEncoder`]); both write the same bytes for the same input and configuration,
//! behind one trait ([`StreamEncoder`]) that replay and the migration engine drive.
//! [`EncoderChoice`] picks and starts one.

mod choice;
mod firmware;
mod in_process;
mod stream;

pub use choice::EncoderChoice;
pub use firmware::{
    default_firmware_path, FailureKind, FirmwareEncoder, FirmwareFailure, FirmwareOptions,
    FIRMWARE_ENV,
};
pub use in_process::InProcessEncoder;
pub use stream::StreamEncoder;
