//! The NBD protocol's messages (the NBD project's `doc/proto.md`), in the subset QEMU's
//! block layer speaks to an export and serves from one: fixed newstyle negotiation
//! (`NBD_OPT_GO`, `INFO`, `EXPORT_NAME`, `LIST`, `ABORT`; everything else answered
//! "unsupported", so a client falls back to simple replies), and the transmission phase's
//! requests and simple replies. All numbers are big-endian. Parsing takes fixed-size
//! byte arrays or slices and never panics: it is what a peer controls (fuzzed by
//! `fuzz/fuzz_targets/nbd_server.rs`).

use std::fmt;

/// The server's first eight bytes.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": the server's newstyle magic, and the magic of every option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Opens every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Opens every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Opens every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// The server need not send 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: no zeroes after `NBD_OPT_EXPORT_NAME`.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
/// Ends negotiation without an export.
pub const OPT_ABORT: u32 = 2;
/// Asks for the export names.
pub const OPT_LIST: u32 = 3;
/// Asks about an export.
pub const OPT_INFO: u32 = 6;
/// Asks about an export and enters transmission on it.
pub const OPT_GO: u32 = 7;

/// Option reply types.
pub const REP_ACK: u32 = 1;
/// One export's name (`NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// One item of information (`NBD_OPT_INFO`, `NBD_OPT_GO`).
pub const REP_INFO: u32 = 3;
/// The option is not supported.
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
/// The option's data is malformed.
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
/// No such export.
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

/// Information types.
pub const INFO_EXPORT: u16 = 0;
/// Block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` is understood.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` is understood.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// `NBD_CMD_TRIM` is understood.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` is understood.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

/// Commands.
pub const CMD_READ: u16 = 0;
/// Write the payload.
pub const CMD_WRITE: u16 = 1;
/// End the session.
pub const CMD_DISC: u16 = 2;
/// Make every completed write durable.
pub const CMD_FLUSH: u16 = 3;
/// The range's content is no longer needed.
pub const CMD_TRIM: u16 = 4;
/// The range reads as zeros afterwards.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: the write is durable when acknowledged.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: `WRITE_ZEROES` must write, not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Error values in replies (Linux errno numbers, as the protocol fixes them).
pub const EPERM: u32 = 1;
/// An I/O error.
pub const EIO: u32 = 5;
/// Out of memory.
pub const ENOMEM: u32 = 12;
/// An invalid request.
pub const EINVAL: u32 = 22;
/// A write past the end of the export.
pub const ENOSPC: u32 = 28;
/// The server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Largest option data accepted (QEMU's own limit on what it sends and takes).
pub const MAX_OPTION_LEN: u32 = 4096;
/// Largest read or write payload (QEMU's NBD_MAX_BUFFER_SIZE).
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Bytes of a request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;

/// A peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NBD protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn bad(what: impl Into<String>) -> ProtocolError {
    ProtocolError(what.into())
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A client's option header: `IHAVEOPT`, the option, its data's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

impl OptionHeader {
    /// Parses the 16 bytes of an option header.
    pub fn parse(b: &[u8; 16]) -> Result<Self, ProtocolError> {
        if be64(&b[..8]) != IHAVEOPT {
            return Err(bad("an option without the IHAVEOPT magic"));
        }
        Ok(OptionHeader {
            option: be32(&b[8..12]),
            length: be32(&b[12..16]),
        })
    }

    /// Its 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.to_be_bytes());
        b[12..].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// A server's option reply: its header and `data`.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// An option reply's header: the option it answers, its type, its data's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply: u32,
    pub length: u32,
}

impl OptionReplyHeader {
    /// Parses the 20 bytes of an option reply header.
    pub fn parse(b: &[u8; 20]) -> Result<Self, ProtocolError> {
        if be64(&b[..8]) != OPTION_REPLY_MAGIC {
            return Err(bad("an option reply without its magic"));
        }
        Ok(OptionReplyHeader {
            option: be32(&b[8..12]),
            reply: be32(&b[12..16]),
            length: be32(&b[16..20]),
        })
    }
}

/// The data of `NBD_OPT_GO` / `NBD_OPT_INFO`: the export's name and the information
/// types asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRequest {
    pub name: String,
    pub info: Vec<u16>,
}

impl GoRequest {
    /// Parses the option's data; its length must be exactly what its fields say.
    pub fn parse(data: &[u8]) -> Result<Self, ProtocolError> {
        let short = || bad("NBD_OPT_GO/INFO data too short");
        let name_len = be32(data.get(..4).ok_or_else(short)?) as usize;
        let name = data.get(4..4 + name_len).ok_or_else(short)?;
        let rest = &data[4 + name_len..];
        let n = be16(rest.get(..2).ok_or_else(short)?) as usize;
        let items = &rest[2..];
        if items.len() != 2 * n {
            return Err(bad(format!(
                "NBD_OPT_GO/INFO asks for {n} information types in {} bytes",
                items.len()
            )));
        }
        Ok(GoRequest {
            name: String::from_utf8(name.to_vec())
                .map_err(|_| bad("an export name that is not UTF-8"))?,
            info: items.chunks_exact(2).map(be16).collect(),
        })
    }

    /// Its bytes, as the option's data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(&(self.info.len() as u16).to_be_bytes());
        for i in &self.info {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b
    }
}

/// `NBD_INFO_EXPORT`'s data: the size and the transmission flags.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// `NBD_INFO_BLOCK_SIZE`'s data: minimum, preferred and largest block size.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    for v in [min, preferred, max] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

/// Parses `NBD_INFO_EXPORT`'s data, if `data` is that item: the size and the flags.
pub fn parse_info_export(data: &[u8]) -> Option<(u64, u16)> {
    (data.len() == 12 && be16(data) == INFO_EXPORT).then(|| (be64(&data[2..10]), be16(&data[10..])))
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    /// Parses the 28 bytes of a request header.
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Result<Self, ProtocolError> {
        if be32(&b[..4]) != REQUEST_MAGIC {
            return Err(bad("a request without its magic"));
        }
        Ok(Request {
            flags: be16(&b[4..6]),
            kind: be16(&b[6..8]),
            cookie: be64(&b[8..16]),
            offset: be64(&b[16..24]),
            length: be32(&b[24..28]),
        })
    }

    /// Its 28 bytes.
    pub fn to_bytes(self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// A simple reply header: the error (0: none) and the request's cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

impl SimpleReply {
    /// Parses the 16 bytes of a simple reply header.
    pub fn parse(b: &[u8; SIMPLE_REPLY_LEN]) -> Result<Self, ProtocolError> {
        if be32(&b[..4]) != SIMPLE_REPLY_MAGIC {
            return Err(bad(
                "a reply without the simple reply magic (structured replies are not negotiated)",
            ));
        }
        Ok(SimpleReply {
            error: be32(&b[4..8]),
            cookie: be64(&b[8..16]),
        })
    }

    /// Its 16 bytes.
    pub fn to_bytes(self) -> [u8; SIMPLE_REPLY_LEN] {
        let mut b = [0u8; SIMPLE_REPLY_LEN];
        b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.error.to_be_bytes());
        b[8..].copy_from_slice(&self.cookie.to_be_bytes());
        b
    }
}

/// An errno of a reply, by name.
pub fn errno_name(e: u32) -> &'static str {
    match e {
        0 => "no error",
        EPERM => "EPERM (not permitted)",
        EIO => "EIO (input/output error)",
        ENOMEM => "ENOMEM (out of memory)",
        EINVAL => "EINVAL (invalid request)",
        ENOSPC => "ENOSPC (past the end of the export)",
        ESHUTDOWN => "ESHUTDOWN (the server is shutting down)",
        _ => "an error unknown to pagewire",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 65536,
        };
        assert_eq!(Request::parse(&r.to_bytes()).unwrap(), r);
        let s = SimpleReply {
            error: EIO,
            cookie: 9,
        };
        assert_eq!(SimpleReply::parse(&s.to_bytes()).unwrap(), s);
        let o = OptionHeader {
            option: OPT_GO,
            length: 7,
        };
        assert_eq!(OptionHeader::parse(&o.to_bytes()).unwrap(), o);
        let g = GoRequest {
            name: "disk".into(),
            info: vec![INFO_BLOCK_SIZE],
        };
        assert_eq!(GoRequest::parse(&g.to_bytes()).unwrap(), g);
        assert_eq!(
            parse_info_export(&info_export(1 << 30, TFLAG_HAS_FLAGS)),
            Some((1 << 30, TFLAG_HAS_FLAGS))
        );
    }

    #[test]
    fn malformed_input_is_refused_not_trusted() {
        let mut r = Request {
            flags: 0,
            kind: CMD_READ,
            cookie: 1,
            offset: 0,
            length: 1,
        }
        .to_bytes();
        r[0] ^= 1;
        assert!(Request::parse(&r).is_err());
        // a GO whose name runs past its data, or whose info count does not fit
        assert!(GoRequest::parse(&[0, 0, 0, 9, b'a']).is_err());
        assert!(GoRequest::parse(&[0, 0, 0, 0, 0, 2, 0, 3]).is_err());
        assert!(GoRequest::parse(&[0, 0, 0]).is_err());
        assert!(parse_info_export(&[0; 11]).is_none());
    }
}
