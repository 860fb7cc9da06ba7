//! The on-disk record format, version 1. This is a stable boundary: segment
//! files written by one version of cmdr are read by every later one.
//!
//! A segment file is a plain concatenation of records. The active (last)
//! segment of a partition may be followed by zero bytes (preallocated
//! space; a record never starts with a zero length), which readers ignore
//! and the next open cuts. All integers are little-endian.
//!
//! ```text
//! byte  size  field
//!    0     4  length       bytes that follow this field (record size = 4 + length)
//!    4     4  crc32c       CRC32C (Castagnoli) of every byte after this field
//!    8     1  version      format version, 1
//!    9     1  flags        bit 0: last record of its round in this partition
//!   10     8  offset       u64, the record's offset in its partition
//!   18     8  timestamp    i64, ms since the Unix epoch
//!   26     8  round        u64, the topic-wide group-commit round that wrote it
//!   34     4  round_parts  u32, how many partitions that round wrote to
//!   38     4  key_len      u32, 0xFFFF_FFFF when there is no key
//!   42     k  key
//!          2  headers      u16 count, then per header:
//!                            u16 name length, name (UTF-8), u32 value length, value
//!          4  value_len    u32
//!          v  value
//! ```
//!
//! `round` and `round_parts` make a round atomic across partitions: on
//! recovery, a round that is not complete in every partition it wrote to is
//! removed from all of them (only the last round can be incomplete, since a
//! round starts only after the previous one is on disk).

use bytes::Bytes;

use crate::Header;

/// The format version written by this code.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed part of a record, up to and including `key_len`.
pub const FIXED_LEN: usize = 42;
/// Flag: last record of its round in its partition.
pub const FLAG_ROUND_END: u8 = 1;
const NO_KEY: u32 = u32::MAX;

/// A decoded record with its round bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// Flags (see [`FLAG_ROUND_END`]).
    pub flags: u8,
    /// Offset in the partition.
    pub offset: u64,
    /// ms since the epoch.
    pub timestamp: i64,
    /// Group-commit round that wrote it.
    pub round: u64,
    /// Partitions written by that round.
    pub round_parts: u32,
    /// Key.
    pub key: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Value.
    pub value: Bytes,
}

/// Size `encode` will produce for these parts.
pub fn encoded_len(key: Option<&[u8]>, headers: &[Header], value: &[u8]) -> usize {
    FIXED_LEN
        + key.map_or(0, <[u8]>::len)
        + 2
        + headers
            .iter()
            .map(|h| 6 + h.name.len() + h.value.len())
            .sum::<usize>()
        + 4
        + value.len()
}

/// A record to encode, borrowed from wherever its parts live (the writer
/// encodes straight from the caller's [`crate::Record`], with no copy).
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Flags (see [`FLAG_ROUND_END`]).
    pub flags: u8,
    /// Offset in the partition.
    pub offset: u64,
    /// ms since the epoch.
    pub timestamp: i64,
    /// Group-commit round that writes it.
    pub round: u64,
    /// Partitions written by that round.
    pub round_parts: u32,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Headers.
    pub headers: &'a [Header],
    /// One more header written after `headers` (the writer's offset commit).
    pub extra: Option<&'a Header>,
    /// Value.
    pub value: &'a [u8],
}

/// Appends the encoding of `rec` to `out`. Callers check sizes first: lengths
/// must fit their fields (the log refuses larger records before encoding).
pub fn encode(rec: &DiskRecord, out: &mut Vec<u8>) {
    encode_ref(
        &RecordRef {
            flags: rec.flags,
            offset: rec.offset,
            timestamp: rec.timestamp,
            round: rec.round,
            round_parts: rec.round_parts,
            key: rec.key.as_deref(),
            headers: &rec.headers,
            extra: None,
            value: &rec.value,
        },
        out,
    );
}

/// [`encode`] for a borrowed record.
pub fn encode_ref(rec: &RecordRef<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let extra = rec.extra.map_or(0, |h| 6 + h.name.len() + h.value.len());
    let len = encoded_len(rec.key, rec.headers, rec.value) + extra;
    out.reserve(len);
    out.extend_from_slice(&((len - 4) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.push(FORMAT_VERSION);
    out.push(rec.flags);
    out.extend_from_slice(&rec.offset.to_le_bytes());
    out.extend_from_slice(&rec.timestamp.to_le_bytes());
    out.extend_from_slice(&rec.round.to_le_bytes());
    out.extend_from_slice(&rec.round_parts.to_le_bytes());
    match rec.key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    let count = rec.headers.len() + usize::from(rec.extra.is_some());
    out.extend_from_slice(&(count as u16).to_le_bytes());
    for h in rec.headers.iter().chain(rec.extra) {
        out.extend_from_slice(&(h.name.len() as u16).to_le_bytes());
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(&(h.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&h.value);
    }
    out.extend_from_slice(&(rec.value.len() as u32).to_le_bytes());
    out.extend_from_slice(rec.value);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record needs: the tail of a torn write, or a cut file.
    Incomplete {
        /// Bytes the record needs in all (when the length field was readable).
        needed: Option<usize>,
    },
    /// The bytes are all there but wrong (checksum, version, lengths).
    Invalid(String),
}

/// Reads only the 4-byte length prefix: the full size of the record starting
/// at `buf[0]`, if the prefix is there.
pub fn peek_len(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(4 + u32::from_le_bytes(b) as usize)
}

/// Decodes the record at the start of `buf`; returns it and its size. Key,
/// header values and value are zero-copy slices of `buf`.
///
/// # Errors
/// [`DecodeError::Incomplete`] when `buf` ends first; [`DecodeError::Invalid`]
/// when the checksum, version or inner lengths are wrong.
pub fn decode(buf: &Bytes, max_len: usize) -> Result<(DiskRecord, usize), DecodeError> {
    let Some(total) = peek_len(buf) else {
        return Err(DecodeError::Incomplete { needed: None });
    };
    if total < FIXED_LEN + 6 || total > max_len {
        return Err(DecodeError::Invalid(format!(
            "implausible record length {total}"
        )));
    }
    if buf.len() < total {
        return Err(DecodeError::Incomplete {
            needed: Some(total),
        });
    }
    let rec = buf.slice(..total);
    let stored_crc = u32::from_le_bytes(rec[4..8].try_into().map_err(|_| bad("crc"))?);
    let crc = crc32c::crc32c(&rec[8..]);
    if crc != stored_crc {
        return Err(DecodeError::Invalid(format!(
            "checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        )));
    }
    if rec[8] != FORMAT_VERSION {
        return Err(DecodeError::Invalid(format!(
            "unknown format version {}",
            rec[8]
        )));
    }
    let mut r = Reader { buf: &rec, pos: 9 };
    let flags = r.u8()?;
    let offset = r.u64()?;
    let timestamp = r.u64()? as i64;
    let round = r.u64()?;
    let round_parts = r.u32()?;
    let key_len = r.u32()?;
    let key = if key_len == NO_KEY {
        None
    } else {
        Some(r.bytes(key_len as usize)?)
    };
    let header_count = r.u16()?;
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let n = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(n)?)
            .map_err(|_| bad("header name"))?
            .to_owned()
            .into();
        let v = r.u32()? as usize;
        headers.push(Header {
            name,
            value: r.bytes(v)?,
        });
    }
    let value_len = r.u32()? as usize;
    let value = r.bytes(value_len)?;
    if r.pos != total {
        return Err(bad("trailing bytes"));
    }
    Ok((
        DiskRecord {
            flags,
            offset,
            timestamp,
            round,
            round_parts,
            key,
            headers,
            value,
        },
        total,
    ))
}

fn bad(what: &str) -> DecodeError {
    DecodeError::Invalid(format!("malformed {what}"))
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad("length"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| bad("u16"))?,
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| bad("u32"))?,
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| bad("u64"))?,
        ))
    }
    /// `n` bytes as a zero-copy slice of the buffer.
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }
}
