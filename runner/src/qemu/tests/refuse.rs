//! Every refusal: a named error, the same whatever the pieces, and a message that says
//! what to do where the user can do something.

use super::build::{delta, page_of, prefix, Raw, BLOCKS, PAGE, RAM_ID};
use super::{parse, parse_chunked};
use crate::qemu::format::{flag, item};
use crate::qemu::StreamError;

/// The error `bytes` is refused with (checked whole and byte by byte).
fn refused(bytes: &[u8]) -> StreamError {
    let whole = parse(bytes).expect_err("refused");
    let bytewise = parse_chunked(bytes, 1).expect_err("refused");
    assert_eq!(whole, bytewise);
    whole
}

fn says(e: &StreamError, words: &str) {
    let msg = e.to_string();
    assert!(msg.contains(words), "'{msg}' does not say '{words}'");
}

/// A PART section with one record word and whatever follows.
fn part_with(word: u64) -> Raw {
    prefix().part(RAM_ID).be64(word)
}

#[test]
fn not_qemu_multifd_and_other_versions() {
    let e = refused(b"GET / HTTP/1.1\r\n");
    assert!(matches!(e, StreamError::NotQemuStream { magic } if &magic == b"GET "));
    let e = refused(&Raw::default().be32(0x1122_3344).be32(1).0);
    assert_eq!(e, StreamError::MultifdChannel);
    says(&e, "multifd=false");
    let e = refused(&Raw::default().be32(0x5145_564d).be32(2).0);
    assert_eq!(e, StreamError::Version { version: 2 });
}

#[test]
fn configuration_refusals() {
    let e = refused(&Raw::magic().u8(item::CONFIGURATION).be32(5000).0);
    assert_eq!(e, StreamError::MachineTypeTooLong { len: 5000 });
    let e = refused(&Raw::header("pc").subsection("configuration/new").0);
    assert!(
        matches!(e, StreamError::UnknownConfigSubsection { ref name } if name == "configuration/new")
    );
    let uuid = Raw::header("pc")
        .subsection("configuration/uuid")
        .bytes(&[0; 16])
        .subsection("configuration/uuid")
        .bytes(&[0; 16]);
    assert!(matches!(
        refused(&uuid.0),
        StreamError::RepeatedConfigSubsection { .. }
    ));
    let bits = Raw::header("pc")
        .subsection("configuration/target-page-bits")
        .be32(16);
    let e = refused(&bits.0);
    assert_eq!(
        e,
        StreamError::TargetPageBits {
            bits: 16,
            expected: 12
        }
    );
    let caps = Raw::header("pc").subsection("configuration/capabilities");
    let e = refused(&caps.clone().be32(1000).0);
    assert_eq!(e, StreamError::TooManyCapabilities { count: 1000 });
    let e = refused(&caps.clone().be32(1).name("x-ignore-shared").0);
    says(&e, "x-ignore-shared=false");
    let e = refused(&caps.be32(2).name("mapped-ram").name("x").0);
    says(&e, "mapped-ram=false");
}

#[test]
fn commands_name_the_capability_to_turn_off() {
    let e = refused(&Raw::header("pc").u8(item::COMMAND).be16(3).be16(16).0);
    assert_eq!(e, StreamError::Command { cmd: 3 });
    says(&e, "POSTCOPY_ADVISE");
    says(&e, "postcopy-ram=false");
    let e = refused(&Raw::header("pc").u8(item::COMMAND).be16(1).be16(0).0);
    says(&e, "return-path=false");
    let e = refused(&Raw::header("pc").u8(item::COMMAND).be16(8).be16(0).0);
    says(&e, "x-colo=false");
}

#[test]
fn switchover_start_only_where_qemu_writes_it() {
    // before RAM's START section, with a payload, after RAM's END section
    let early = Raw::header("pc").switchover_start();
    let payload = prefix().u8(item::COMMAND).be16(11).be16(1).u8(0);
    let late = prefix().end(RAM_ID).eos(RAM_ID, true).switchover_start();
    for stream in [early, payload, late] {
        let e = refused(&stream.0);
        assert_eq!(e, StreamError::Command { cmd: 11 });
        says(&e, "SWITCHOVER_START");
        says(&e, "before RAM's END section");
    }
}

#[test]
fn section_refusals() {
    let e = refused(&Raw::header("pc").u8(0x09).0);
    assert_eq!(e, StreamError::UnknownSectionType { byte: 0x09 });
    let block = Raw::header("pc")
        .u8(item::SECTION_START)
        .be32(5)
        .name("block")
        .be32(0)
        .be32(1);
    let e = refused(&block.0);
    says(&e, "block migration");
    let bitmap = Raw::header("pc")
        .u8(item::SECTION_START)
        .be32(5)
        .name("dirty-bitmap")
        .be32(0)
        .be32(1);
    says(&refused(&bitmap.0), "dirty-bitmaps=false");
    let e = refused(&Raw::header("pc").start(RAM_ID, 3).0);
    assert_eq!(e, StreamError::RamVersion { version: 3 });
    let e = refused(&prefix().start(RAM_ID, 4).0);
    assert_eq!(e, StreamError::RepeatedRamStart);
    let e = refused(&Raw::header("pc").part(RAM_ID).0);
    assert_eq!(e, StreamError::SectionBeforeRamStart { id: RAM_ID });
    let e = refused(&prefix().part(7).0);
    assert_eq!(e, StreamError::UnknownSection { id: 7 });
    let ended = prefix().end(RAM_ID).eos(RAM_ID, true);
    let e = refused(&ended.part(RAM_ID).0);
    assert_eq!(e, StreamError::SectionAfterRamEnd { id: RAM_ID });
    let e = refused(&prefix().u8(item::SECTION_FULL).0);
    assert_eq!(e, StreamError::DeviceStateBeforeRamEnd);
    let e = refused(&prefix().u8(item::EOF).0);
    assert_eq!(e, StreamError::DeviceStateBeforeRamEnd);
}

#[test]
fn footer_refusals() {
    let bad_id = Raw::header("pc")
        .start(RAM_ID, 4)
        .blocks(BLOCKS)
        .eos(9, true);
    let e = refused(&bad_id.0);
    assert_eq!(
        e,
        StreamError::FooterMismatch {
            found: 9,
            expected: RAM_ID
        }
    );
    let mixed = prefix().part(RAM_ID).eos(RAM_ID, false).part(RAM_ID);
    assert_eq!(refused(&mixed.0), StreamError::FooterInconsistent);
    let mixed = Raw::header("pc")
        .start(RAM_ID, 4)
        .blocks(BLOCKS)
        .eos(RAM_ID, false)
        .part(RAM_ID)
        .eos(RAM_ID, true);
    assert_eq!(refused(&mixed.0), StreamError::FooterInconsistent);
}

#[test]
fn flag_refusals_name_the_feature() {
    let cases: [(u64, &str); 5] = [
        (flag::COMPRESS_PAGE, "compress=false"),
        (flag::MULTIFD_FLUSH, "multifd=false"),
        (flag::HOOK, "rdma"),
        (flag::FULL, "obsolete"),
        (0x400, "does not write"),
    ];
    for (bits, words) in cases {
        let e = refused(&part_with(bits | flag::PAGE).0);
        assert_eq!(
            e,
            StreamError::Flags {
                flags: bits | flag::PAGE
            }
        );
        says(&e, words);
    }
    for flags in [
        flag::ZERO | flag::PAGE,
        0,
        flag::CONTINUE,
        flag::MEM_SIZE | flag::CONTINUE,
    ] {
        let e = refused(&part_with(flags).0);
        assert_eq!(e, StreamError::FlagCombination { flags }, "flags {flags:x}");
    }
    let e = refused(&part_with(PAGE as u64 | flag::EOS).0);
    assert!(matches!(e, StreamError::MalformedEos { .. }));
    let e = refused(&part_with(flag::EOS | flag::CONTINUE).0);
    assert!(matches!(e, StreamError::MalformedEos { .. }));
}

#[test]
fn block_list_refusals() {
    let head = || Raw::header("pc").start(RAM_ID, 4);
    let e = refused(&prefix().part(RAM_ID).blocks(BLOCKS).0);
    assert_eq!(e, StreamError::MisplacedBlockList);
    let twice = head().blocks(BLOCKS).blocks(BLOCKS);
    assert_eq!(refused(&twice.0), StreamError::MisplacedBlockList);
    let e = refused(&head().be64(PAGE as u64 | flag::MEM_SIZE).u8(0).0);
    assert_eq!(e, StreamError::EmptyBlockName);
    let many: Vec<(String, u64)> = (0..1025).map(|i| (format!("b{i}"), PAGE as u64)).collect();
    let refs: Vec<(&str, u64)> = many.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(refused(&head().blocks(&refs).0), StreamError::TooManyBlocks);
    let e = refused(&head().blocks(&[("a", 4096), ("a", 4096)]).0);
    assert!(matches!(e, StreamError::RepeatedBlock { ref name } if name == "a"));
    let odd = head()
        .be64(PAGE as u64 | flag::MEM_SIZE)
        .name("a")
        .be64(100);
    let e = refused(&odd.0);
    assert!(matches!(e, StreamError::BlockLength { length: 100, .. }));
    let over = head()
        .be64(PAGE as u64 | flag::MEM_SIZE)
        .name("a")
        .be64(2 * PAGE as u64);
    let e = refused(&over.0);
    assert!(matches!(
        e,
        StreamError::BlockListTotal {
            remaining: 4096,
            ..
        }
    ));
    let no_list = head()
        .eos(RAM_ID, true)
        .part(RAM_ID)
        .zero(0, Some("pc.ram"));
    assert_eq!(refused(&no_list.0), StreamError::PageBeforeBlockList);
}

#[test]
fn page_refusals() {
    let e = refused(&prefix().part(RAM_ID).zero(0, Some("pc.rom")).0);
    assert!(matches!(e, StreamError::UnknownBlock { ref name } if name == "pc.rom"));
    let e = refused(&prefix().part(RAM_ID).zero(0, Some("")).0);
    assert!(matches!(e, StreamError::UnknownBlock { .. }));
    let e = refused(&prefix().part(RAM_ID).zero(0, None).0);
    assert_eq!(e, StreamError::ContinueWithoutBlock);
    let past = prefix()
        .part(RAM_ID)
        .page(4 * PAGE as u64, Some("pc.ram"), &page_of(1));
    let e = refused(&past.0);
    assert!(matches!(
        e,
        StreamError::PagePastBlock {
            offset: 16384,
            length: 16384,
            ..
        }
    ));
    let past = prefix()
        .part(RAM_ID)
        .zero(0, Some("pc.ram"))
        .zero(1 << 40, None);
    assert!(matches!(
        refused(&past.0),
        StreamError::PagePastBlock { .. }
    ));
}

#[test]
fn xbzrle_refusals() {
    let rec = || {
        prefix()
            .part(RAM_ID)
            .record(0, flag::XBZRLE, Some("pc.ram"))
    };
    let e = refused(&rec().u8(2).be16(1).u8(0).0);
    assert_eq!(e, StreamError::XbzrleEncoding { byte: 2 });
    let e = refused(&rec().u8(1).be16(5000).0);
    assert_eq!(e, StreamError::XbzrleTooLong { len: 5000 });
    // A zero run of 4000 and a literal run of 200: past the page's end.
    let past = [0xa0, 0x1f, 0xc8, 0x01];
    let mut long = past.to_vec();
    long.extend_from_slice(&[0xaa; 200]);
    let e = refused(&rec().u8(1).be16(long.len() as u16).bytes(&long).0);
    assert!(matches!(e, StreamError::XbzrleInvalid { offset: 0, .. }));
    // An empty literal run.
    let e = refused(&rec().u8(1).be16(2).bytes(&[0x01, 0x00]).0);
    assert!(matches!(e, StreamError::XbzrleInvalid { .. }));
    // A valid delta passes.
    let ok = rec()
        .u8(1)
        .be16(delta(1, 2).len() as u16)
        .bytes(&delta(1, 2))
        .be64(flag::EOS);
    assert!(matches!(parse(&ok.0), Err(StreamError::Truncated { .. })));
}

#[test]
fn damaged_samples_never_panic() {
    let s = super::build::sample(true, true);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut d = s.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % d.len() as u64) as usize;
            d[at] = next() as u8;
        }
        let cut = d.len() - (next() % 64) as usize;
        let _ = parse_chunked(&d[..cut], 1 + (next() % 5000) as usize);
    }
}
