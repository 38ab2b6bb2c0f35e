//! Format v1 line building, the Rust twin of `riskaudit/format/_codec.py`.
//!
//! An event line is `{"seq":N,"prev":"<64 hex>","ts":"<RFC 3339, 9 digits>Z",` followed
//! by the body the producer encoded (`"event_id":...}`); a control line is
//! `{"seq":N,"prev":"<64 hex>",` + `"kind":"K",<fields>` + `,"ts":"..."` (unless the
//! fields hold their own `ts`, as a checkpoint does) + `}`. The hash of a line is the
//! lowercase hex SHA-256 of its bytes without the newline. The pure-Python reference
//! must produce the same bytes: tests/unit/test_native.py checks it on the vectors and on
//! random records.

use sha2::{Digest, Sha256};

pub const HASH_HEX: usize = 64;
pub type HashHex = [u8; HASH_HEX];

/// The hex SHA-256 of a line (without its newline).
#[inline]
pub fn line_hash(line: &[u8]) -> HashHex {
    let digest = Sha256::digest(line);
    let mut out = [0u8; HASH_HEX];
    hex::encode_to_slice(digest, &mut out).expect("64 bytes hold 32 in hex");
    out
}

/// `YYYY-MM-DDTHH:MM:SS` of a whole second, cached: consecutive records share it.
pub struct TsPrefix {
    sec: i64,
    text: [u8; 19],
}

impl TsPrefix {
    pub fn new() -> Self {
        TsPrefix {
            sec: i64::MIN,
            text: [0; 19],
        }
    }

    /// Append the 30-byte timestamp of `ns` (nanoseconds since the epoch, UTC).
    #[inline]
    pub fn push(&mut self, ns: i64, out: &mut Vec<u8>) {
        let sec = ns.div_euclid(1_000_000_000);
        let frac = ns.rem_euclid(1_000_000_000) as u32;
        if sec != self.sec {
            self.text = civil(sec);
            self.sec = sec;
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        let mut digits = [b'0'; 9];
        let mut v = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// The calendar time of a second, by the C library (`gmtime_r`), as `time.gmtime` does.
fn civil(sec: i64) -> [u8; 19] {
    // SAFETY: gmtime_r writes only into the struct we own; a null return means the
    // value is out of its range, left as zeros (never the case for a clock reading).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = sec as libc::time_t;
    unsafe { libc::gmtime_r(&t, &mut tm) };
    let mut out = [0u8; 19];
    let year = (tm.tm_year as i64 + 1900).clamp(0, 9999) as u32;
    put(&mut out[0..4], year);
    out[4] = b'-';
    put(&mut out[5..7], (tm.tm_mon + 1) as u32);
    out[7] = b'-';
    put(&mut out[8..10], tm.tm_mday as u32);
    out[10] = b'T';
    put(&mut out[11..13], tm.tm_hour as u32);
    out[13] = b':';
    put(&mut out[14..16], tm.tm_min as u32);
    out[16] = b':';
    put(&mut out[17..19], tm.tm_sec as u32);
    out
}

fn put(slot: &mut [u8], mut v: u32) {
    for d in slot.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `{"seq":N,"prev":"H",` — the head every record starts with.
#[inline]
fn head(seq: u64, prev: &HashHex, out: &mut Vec<u8>) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(buf.format(seq).as_bytes());
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev);
    out.extend_from_slice(b"\",");
}

/// An event line: the head, `"ts":"..."`, then the encoded body (which ends in `}`).
#[inline]
pub fn event_line(
    seq: u64,
    prev: &HashHex,
    ts_ns: i64,
    body: &[u8],
    ts: &mut TsPrefix,
    out: &mut Vec<u8>,
) {
    head(seq, prev, out);
    out.extend_from_slice(b"\"ts\":\"");
    ts.push(ts_ns, out);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(body);
}

/// A control line: the head, `"kind":...` and the fields (`mid`), `ts` last unless the
/// fields carry their own.
pub fn control_line(
    seq: u64,
    prev: &HashHex,
    ts_ns: i64,
    mid: &[u8],
    has_ts: bool,
    ts: &mut TsPrefix,
    out: &mut Vec<u8>,
) {
    head(seq, prev, out);
    out.extend_from_slice(mid);
    if !has_ts {
        out.extend_from_slice(b",\"ts\":\"");
        ts.push(ts_ns, out);
        out.push(b'"');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_matches_python() {
        let mut ts = TsPrefix::new();
        let mut out = Vec::new();
        ts.push(1_764_147_600_000_153_201, &mut out);
        assert_eq!(out, b"2025-11-26T09:00:00.000153201Z");
    }

    #[test]
    fn hash_of_empty_line() {
        assert_eq!(
            &line_hash(b""),
            b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
