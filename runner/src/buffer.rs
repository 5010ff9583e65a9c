//! Large buffers (codec storage, memory images): allocated up front, with a clear message
//! when the machine has not got them.

use anyhow::{anyhow, Result};

/// Allocates `len` zeroed bytes, or says clearly that the machine has not got them. Every
/// page of the buffer is touched here, so that first-touch page faults do not land in the
/// timed codec calls.
pub(crate) fn zeroed(len: usize, what: &str) -> Result<Vec<u8>> {
    // Probe first: `vec!` aborts the process when an allocation fails.
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(len).map_err(|_| {
        anyhow!(
            "cannot allocate {what} ({} MiB); lower --cache-mib or use a smaller series",
            len >> 20
        )
    })?;
    drop(probe);
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        // an opaque store: the compiler cannot drop it as "writing zero to zeroed memory"
        v[i] = std::hint::black_box(0);
    }
    Ok(v)
}
