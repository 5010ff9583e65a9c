//! The checks after every pass: the destination holds what the source sent, and nothing
//! else arrived.

use std::fmt;

use anyhow::Result;

use super::receiver::{Destination, Receiver};

/// A verification failure: the destination does not hold what the source sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// After `pass`, destination page `pfn` differs from the source snapshot.
    PageMismatch { pass: usize, pfn: u64, sent: bool },
    /// The decoder delivered other pages than the encoder was given.
    WrongPages {
        pass: usize,
        position: usize,
        sent: Option<u64>,
        delivered: Option<u64>,
    },
    /// The decoder delivered a page outside memory or of the wrong length.
    BadDelivery { pass: usize, pfn: u64, len: usize },
    /// Iteration markers or the end of stream did not arrive as sent.
    Stream { pass: usize, what: String },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::PageMismatch { pass, pfn, sent } => write!(
                f,
                "verification failed in pass {pass}: destination page pfn {pfn} differs from the source snapshot ({})",
                if *sent {
                    "the page was sent in this pass"
                } else {
                    "the page was not sent in this pass, so it must be unchanged"
                }
            ),
            VerifyError::WrongPages {
                pass,
                position,
                sent,
                delivered,
            } => {
                let s = sent.map_or_else(|| "nothing".to_string(), |p| format!("pfn {p}"));
                let d = delivered.map_or_else(|| "nothing".to_string(), |p| format!("pfn {p}"));
                write!(
                    f,
                    "verification failed in pass {pass}: page #{position} of the pass was {s} at the source but {d} at the destination"
                )
            }
            VerifyError::BadDelivery { pass, pfn, len } => write!(
                f,
                "verification failed in pass {pass}: the decoder delivered pfn {pfn} with {len} bytes, outside memory or not one page"
            ),
            VerifyError::Stream { pass, what } => {
                write!(f, "verification failed in pass {pass}: {what}")
            }
        }
    }
}

impl std::error::Error for VerifyError {}

/// First index where two pfn lists differ.
pub(super) fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    let n = a.len().min(b.len());
    (0..n)
        .find(|&i| a[i] != b[i])
        .or((a.len() != b.len()).then_some(n))
}

/// Checks what arrived in `pass` against what was sent and against the snapshot.
pub(super) fn verify_pass(
    pass: usize,
    last: bool,
    sent: &[u64],
    snapshot: &[u8],
    dest: &Destination,
    rx: &Receiver<'_>,
) -> Result<()> {
    let stream = |what: String| VerifyError::Stream { pass, what };
    if let Some((pfn, len)) = dest.bad {
        return Err(VerifyError::BadDelivery { pass, pfn, len }.into());
    }
    if !rx.pending.is_empty() {
        return Err(stream(format!(
            "{} bytes of encoder output are not a whole frame after the iteration ended",
            rx.pending.len()
        ))
        .into());
    }
    if let Some(i) = first_difference(sent, &dest.delivered) {
        return Err(VerifyError::WrongPages {
            pass,
            position: i,
            sent: sent.get(i).copied(),
            delivered: dest.delivered.get(i).copied(),
        }
        .into());
    }
    if dest.iterations.last() != Some(&(pass as u64)) || dest.iterations.len() != pass + 1 {
        return Err(stream(format!(
            "iteration markers received {:?}, expected 0..={pass}",
            dest.iterations
        ))
        .into());
    }
    if dest.image != snapshot {
        let ps = dest.page_size;
        let pfn = (0..snapshot.len() / ps)
            .find(|&p| dest.image[p * ps..(p + 1) * ps] != snapshot[p * ps..(p + 1) * ps])
            .unwrap_or(0) as u64;
        return Err(VerifyError::PageMismatch {
            pass,
            pfn,
            sent: sent.binary_search(&pfn).is_ok(),
        }
        .into());
    }
    if last {
        let complete = rx.decoder.as_ref().map(|d| d.check_complete());
        if !dest.ended || !matches!(complete, Some(Ok(()))) {
            return Err(stream(format!(
                "the end of stream did not arrive (decoder says {complete:?})"
            ))
            .into());
        }
    } else if dest.ended {
        return Err(stream("end of stream arrived before the last pass".into()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_names_pass_and_pfn() {
        let e: anyhow::Error = VerifyError::PageMismatch {
            pass: 3,
            pfn: 77,
            sent: true,
        }
        .into();
        let m = format!("{e}");
        assert!(m.contains("pass 3") && m.contains("pfn 77"), "{m}");
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
    }

    #[test]
    fn verify_catches_a_corrupted_destination() {
        let mut storage = [0u8; 0];
        let rx = Receiver::new(pagewire::DecodeMode::InPlace, &mut storage);
        let snapshot = vec![7u8; 4 * 4096];
        let mut dest = Destination {
            image: snapshot.clone(),
            page_size: 4096,
            delivered: vec![1, 2],
            iterations: vec![0, 1],
            iteration_base: 0,
            ended: false,
            bad: None,
        };
        verify_pass(1, false, &[1, 2], &snapshot, &dest, &rx).unwrap();

        dest.image[3 * 4096 + 9] = 0;
        let e = verify_pass(1, false, &[1, 2], &snapshot, &dest, &rx).unwrap_err();
        assert_eq!(
            e.downcast_ref::<VerifyError>(),
            Some(&VerifyError::PageMismatch {
                pass: 1,
                pfn: 3,
                sent: false
            })
        );
        dest.image[3 * 4096 + 9] = 7;

        dest.delivered = vec![1, 3];
        let e = verify_pass(1, false, &[1, 2], &snapshot, &dest, &rx).unwrap_err();
        assert!(
            format!("{e}").contains("pfn 2 at the source but pfn 3"),
            "{e}"
        );
        dest.delivered = vec![1, 2];

        // the last pass needs the end of stream
        let e = verify_pass(1, true, &[1, 2], &snapshot, &dest, &rx).unwrap_err();
        assert!(format!("{e}").contains("end of stream"), "{e}");
    }
}
