//! A running guest migrated with its root disk through the pagewire tunnels (disk and
//! memory on one shaped, mutual-TLS link), then back into the disk it left, incrementally:
//! both disks equal byte for byte at each switchover, both machines' RAM equal, the guest
//! counts on and reads every file back from the destination's disk, and the last disk
//! checks clean with every file as the guest recorded it. Small disk, small guest; the
//! 1 GiB run with real content is `pagewire tunnel demo --disk` (docs/STORAGE.md).
//! Skipped (with the reason) where QEMU, the kernel or e2fsprogs cannot be had.

mod guest;

use std::time::Duration;

use pagewire::Config;
use pagewire_runner::machine::disk_guest;
use pagewire_runner::machine::Workload;
use pagewire_runner::migrate::Codec;
use pagewire_runner::net::Shape;
use pagewire_runner::tunnel::demo::{run_disk_demo, DiskDemoConfig, DiskMethod, TunnelCodec};
use pagewire_runner::tunnel::LinkCompression;

#[test]
fn a_guest_moves_with_its_disk_and_comes_back_incrementally() {
    let cache = guest::target_dir().join("test-guest");
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("pristine.raw");
    let image = match disk_guest::build(&cache, Workload::Heartbeat, &disk, 64) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let cfg = DiskDemoConfig {
        image,
        shape: Shape::parse("1gbit", "2ms").unwrap(),
        codec: TunnelCodec {
            codec: Codec::On,
            config: Config::DEFAULT,
            link: LinkCompression::ZstdAuto,
        },
        work_dir: work.path().join("runs"),
        timeout: Duration::from_secs(180),
        rounds_before_way_back: 4,
    };
    let demo = run_disk_demo(
        &[DiskMethod::Pagewire, DiskMethod::PagewireWayBack],
        &cfg,
        &mut |l| eprintln!("{l}"),
    )
    .unwrap();
    for r in &demo.runs {
        eprintln!("{}", serde_json::to_string(r).unwrap());
    }
    let [there, back] = &demo.runs[..] else {
        panic!("two runs, got {:?}", demo.runs);
    };
    assert!(there.verified, "{there:?}");
    assert!(back.verified, "{back:?}");
    assert!(there.disks_equal && back.disks_equal);
    assert!(back.files_checked >= 20, "{back:?}");
    // the way back sends what changed, and refers to the rest
    assert!(back.differing_bytes < there.differing_bytes / 4, "{back:?}");
    let refs = back.disk_destination.as_ref().unwrap().delivered.base_bytes;
    assert!(refs > 0, "{back:?}");
    assert!(back.disk_wire_bytes < there.disk_wire_bytes / 2, "{back:?}");
}
