//! What the codec and zstd make of a disk image's used blocks, offline: the measurement
//! behind docs/STORAGE.md's *Results* (the codec with zstd 3 and 6 over its stream, against
//! zstd 3 and 6 over the used blocks alone). Needs an image, so it is ignored by default:
//!
//!     IMG=path/to/pristine.raw cargo test --release -p pagewire-runner \
//!         --test disk_compression -- --ignored --nocapture
//!
//! (`pagewire tunnel demo --disk --work-dir DIR` leaves the demo's disk at DIR/pristine.raw.)

use std::io::Read;

use pagewire::Config;
use pagewire_runner::encoders::{InProcessEncoder, StreamEncoder};
use pagewire_runner::migrate::Codec;

#[test]
#[ignore]
fn codec_and_zstd_over_a_disk_images_used_blocks() {
    let path = std::env::var("IMG").expect("IMG names a raw disk image");
    let mut img = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut img)
        .unwrap();
    let used: Vec<(usize, &[u8])> = img
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .collect();
    // as the disk tunnel runs it under zstd: the codec's LZ4 off
    let (config, features) = Codec::On.stages().apply(Config {
        lz4: false,
        ..Config::DEFAULT
    });
    let mut enc = InProcessEncoder::with_features(config, features).unwrap();
    let mut stream = Vec::new();
    for (i, b) in &used {
        enc.encode_page(*i as u64, b, &mut stream).unwrap();
    }
    enc.end_iteration(&mut stream).unwrap();
    enc.finish(&mut stream).unwrap();
    let plain: Vec<u8> = used.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    println!(
        "used blocks: {} bytes; codec stream: {} bytes",
        plain.len(),
        stream.len()
    );
    for level in [3, 6] {
        let codec = zstd::encode_all(&stream[..], level).unwrap().len();
        let alone = zstd::encode_all(&plain[..], level).unwrap().len();
        println!("zstd {level}: codec + zstd {codec} bytes, zstd alone {alone} bytes");
        assert!(codec > 0 && alone > 0);
    }
}
