//! The device loop: poll the rings until the stream is finished, the host says stop, or the
//! region turns out to be broken.

use pagewire::offload::{Device, OffloadError, Poll};

/// What the loop needs from the machine it runs on.
pub trait Platform {
    /// Nothing to do for `streak` polls in a row (idle, or waiting for the host to make
    /// room): spin, yield or sleep. Returning `false` ends the loop (e.g. the host is gone).
    fn wait(&mut self, streak: u32) -> bool;

    /// Descriptor number `count` (from 1) was handled. Hook for fault injection in tests.
    fn handled(&mut self, _count: u64) {}
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The FINISH completion is published.
    Finished,
    /// The host wrote the stop command.
    Stopped,
    /// [`Platform::wait`] gave up.
    Abandoned,
    /// The region is broken (the device state word says FAILED with a code).
    Failed(OffloadError),
}

/// Serves the rings until the stream ends.
pub fn serve<P: Platform>(dev: &mut Device<'_>, platform: &mut P) -> Exit {
    let mut streak = 0u32;
    let mut count = 0u64;
    loop {
        match dev.poll() {
            Ok(Poll::Done { .. }) => {
                streak = 0;
                count += 1;
                platform.handled(count);
            }
            Ok(Poll::Idle | Poll::Blocked) => {
                streak = streak.saturating_add(1);
                if !platform.wait(streak) {
                    return Exit::Abandoned;
                }
            }
            Ok(Poll::Finished) => return Exit::Finished,
            Ok(Poll::Stopped) => return Exit::Stopped,
            Err(e) => return Exit::Failed(e),
        }
    }
}
