//! Every codec of the comparison harness decodes back to the source pages, so its numbers
//! describe a working codec.

use pagewire::{Config, Features};
use pagewire_benches::codecs::{Block, Codec, Lz, Pagewire, Raw, Xbzrle};
use pagewire_benches::PageSet;

fn check(codec: &mut dyn Codec, set: &PageSet) {
    codec.prepare().unwrap();
    let ps = set.page_size;
    let mut mem = vec![0xeeu8; set.mem_bytes];
    let mut total = 0;
    for (i, pass) in set.passes.iter().enumerate() {
        let mut wire = Vec::new();
        codec
            .encode_pass(set, pass, i + 1 == set.passes.len(), &mut wire)
            .unwrap();
        codec.decode_pass(&wire, &mut mem).unwrap();
        for &(pfn, off) in pass {
            let at = pfn as usize * ps;
            assert!(
                mem[at..at + ps] == *set.page(off),
                "{}: pass {i} pfn {pfn}",
                codec.name()
            );
        }
        total += wire.len();
    }
    assert!(total > 0);
}

#[test]
fn every_codec_round_trips() {
    let set = PageSet::synthetic(4, 3, 9).unwrap();
    let ps = set.page_size;
    let cfg = Config {
        page_size: ps as u32,
        cache_pages: 512,
        ..Config::DEFAULT
    };
    let mut codecs: Vec<Box<dyn Codec>> = vec![
        Box::new(Raw(ps)),
        Box::new(Xbzrle::new(512, ps)),
        Box::new(Block::new(Lz::Zstd(1), 1, ps).unwrap()),
        Box::new(Block::new(Lz::Zstd(3), 64, ps).unwrap()),
        Box::new(Block::new(Lz::Lz4, 16, ps).unwrap()),
        Box::new(Pagewire::new("all", cfg, Features::ALL, None)),
        Box::new(Pagewire::new(
            "no lz4 + zstd",
            Config { lz4: false, ..cfg },
            Features::ALL,
            Some(1),
        )),
        Box::new(Pagewire::new("zero only", cfg, Features::NONE, None)),
    ];
    for c in &mut codecs {
        check(c.as_mut(), &set);
    }
}
