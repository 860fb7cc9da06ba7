//! Property tests of the on-disk record format (version 1): every record
//! round-trips exactly, and damage (one flipped byte, a cut) is always
//! detected: `decode` then fails and never returns a wrong record.

use bytes::Bytes;
use cmdr_log::embedded::format::{decode, encode, encoded_len, DecodeError, DiskRecord};
use cmdr_log::Header;
use proptest::prelude::*;

/// Large enough for every generated record, so only damage makes decode fail.
const MAX_LEN: usize = 1 << 20;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn header() -> impl Strategy<Value = Header> {
    (".{0,12}", bytes(24)).prop_map(|(name, value)| Header {
        name: name.into(),
        value,
    })
}

fn record() -> impl Strategy<Value = DiskRecord> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u32>(),
        prop::option::of(bytes(40)),
        prop::collection::vec(header(), 0..4),
        bytes(300),
    )
        .prop_map(
            |(flags, offset, timestamp, round, round_parts, key, headers, value)| DiskRecord {
                flags,
                offset,
                timestamp,
                round,
                round_parts,
                key,
                headers,
                value,
            },
        )
}

fn encoded(rec: &DiskRecord) -> Vec<u8> {
    let mut out = Vec::new();
    encode(rec, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(rec in record(), prefix in bytes(16)) {
        let mut buf = prefix.to_vec();
        encode(&rec, &mut buf);
        let enc = Bytes::from(buf).slice(prefix.len()..);
        prop_assert_eq!(enc.len(), encoded_len(rec.key.as_deref(), &rec.headers, &rec.value));
        let (back, len) = decode(&enc, MAX_LEN).expect("an intact record decodes");
        prop_assert_eq!(len, enc.len());
        prop_assert_eq!(back, rec);
    }

    #[test]
    fn decode_reads_one_record_from_a_concatenation(a in record(), b in record()) {
        let mut buf = encoded(&a);
        let first = buf.len();
        encode(&b, &mut buf);
        let buf = Bytes::from(buf);
        let (got_a, la) = decode(&buf, MAX_LEN).unwrap();
        prop_assert_eq!(la, first);
        prop_assert_eq!(got_a, a);
        let (got_b, lb) = decode(&buf.slice(la..), MAX_LEN).unwrap();
        prop_assert_eq!(la + lb, buf.len());
        prop_assert_eq!(got_b, b);
    }

    #[test]
    fn any_flipped_byte_is_detected(rec in record(), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut enc = encoded(&rec);
        let i = at.index(enc.len());
        enc[i] ^= mask;
        match decode(&Bytes::from(enc), MAX_LEN) {
            Err(DecodeError::Invalid(_) | DecodeError::Incomplete { .. }) => {}
            Ok((got, _)) => prop_assert!(false, "byte {i} flipped by {mask:#04x} decoded as {got:?}"),
        }
    }

    #[test]
    fn any_truncation_is_incomplete(rec in record(), cut in any::<prop::sample::Index>()) {
        let enc = encoded(&rec);
        let keep = cut.index(enc.len());
        let res = decode(&Bytes::copy_from_slice(&enc[..keep]), MAX_LEN);
        prop_assert!(
            matches!(res, Err(DecodeError::Incomplete { .. })),
            "{keep} of {} bytes gave {res:?}", enc.len()
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in bytes(200)) {
        let _ = decode(&raw, MAX_LEN);
    }
}

#[test]
fn oversized_length_is_invalid_not_incomplete() {
    let enc = encoded(&DiskRecord {
        flags: 0,
        offset: 0,
        timestamp: 0,
        round: 0,
        round_parts: 1,
        key: None,
        headers: Vec::new(),
        value: Bytes::from_static(&[7; 100]),
    });
    let res = decode(&Bytes::from(enc), 64);
    assert!(matches!(res, Err(DecodeError::Invalid(_))), "{res:?}");
}
