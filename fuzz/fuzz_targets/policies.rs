//! The stop policies and Synchronized Arrival on arbitrary iteration reports: no panic, and
//! every policy stops within its ceiling.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pagewire::policy::{
    Decision, DowntimeLimit, GroupDecision, IterationReport, SmartStop, StopPolicy,
    SynchronizedArrival, XenClassic, XenToday, DEFAULT_CEILING,
};

#[derive(Debug, Arbitrary)]
struct Report {
    sent: u64,
    dirtied: u64,
    remaining: u64,
    bytes: u64,
    elapsed_us: u64,
    bandwidth: u64,
}

fn report(i: u32, r: &Report) -> IterationReport {
    IterationReport {
        iteration: i,
        pages_sent: r.sent,
        pages_dirtied: r.dirtied,
        pages_remaining: r.remaining,
        bytes_sent: r.bytes,
        elapsed_us: r.elapsed_us,
        bandwidth_bytes_per_s: r.bandwidth,
    }
}

fuzz_target!(|input: (u64, u8, Vec<Report>)| {
    let (vm_pages, window, reports) = input;
    if reports.is_empty() {
        return;
    }
    let mut policies: Vec<Box<dyn StopPolicy>> = vec![
        Box::new(XenClassic::new(vm_pages)),
        Box::new(XenToday::default()),
        Box::new(DowntimeLimit::new(4096)),
        Box::new(SmartStop::new(usize::from(window))),
    ];
    for p in &mut policies {
        let mut stopped = false;
        for i in 1..=DEFAULT_CEILING {
            let r = &reports[(i as usize - 1) % reports.len()];
            if p.decide(&report(i, r)) == Decision::StopAndCopy {
                stopped = true;
                break;
            }
        }
        assert!(
            stopped,
            "{} did not stop within {DEFAULT_CEILING} iterations",
            p.name()
        );
    }

    // a group of members, each on its own Smart Stop, reporting round robin
    let members = usize::from(window % 4) + 2;
    let mut group = SynchronizedArrival::<8>::new();
    let ids: Vec<usize> = (0..members).filter_map(|_| group.join()).collect();
    let mut own: Vec<SmartStop> = (0..members)
        .map(|_| SmartStop::new(usize::from(window)))
        .collect();
    let mut done = vec![false; members];
    let mut k = 0;
    for round in 1..=(DEFAULT_CEILING + 1) {
        for m in 0..members {
            if done[m] {
                continue;
            }
            let r = report(round, &reports[k % reports.len()]);
            k += 1;
            let d = own[m].decide(&r);
            if group.report(ids[m], d, &r) == GroupDecision::StopAndCopy {
                done[m] = true;
            }
        }
    }
    assert!(done.iter().all(|&d| d), "a group member never stopped");
});
