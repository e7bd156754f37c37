//! The journal's bytes: a header line naming the checkpoint it follows, then records.
//!
//! ```text
//! privlink-journal v1 checkpoint-len=<bytes> checkpoint-fnv1a64=<16 hex>\n
//! record*: len u32 LE | !len u32 LE | seq u64 LE | fnv1a64(seq LE ++ body) u64 LE | body
//! ```
//!
//! The header binds the journal to one checkpoint (the length and hash of its body, as in
//! its own header): a journal left behind by a compaction that crashed before removing it
//! names a checkpoint that is no longer there and is ignored. The length is stored twice
//! (once inverted) so that a damaged length is told from a record cut short by a crash;
//! sequence numbers run 1, 2, 3… so a record lost or repeated in the middle is seen.
//!
//! Only whole records are ever appended, each synced before its change is acknowledged,
//! and a write is always made at the end of the last good record. So damage can only be
//! legitimate at the very end (a crash during an append: that record was never
//! acknowledged, and is dropped); damage followed by any good record is corruption.

use std::ops::Range;

/// The journal's name inside the state directory.
pub const JOURNAL_FILE: &str = "state.journal";
/// The file a new journal is written to before it is renamed into place.
pub const JOURNAL_TMP_FILE: &str = "state.journal.tmp";
const MAGIC: &str = "privlink-journal v1";
/// Bytes before a record's body.
pub const FRAME: usize = 24;
/// The longest record body: far beyond any change a request can make (requests are at
/// most 1 MiB), and small enough that a damaged length never makes us allocate much.
pub const MAX_RECORD: usize = 64 << 20;

/// A checkpoint as a journal names it: the length and FNV-1a 64 of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointId {
    pub len: u64,
    pub hash: u64,
}

/// The header line of a journal that follows `checkpoint`.
pub fn header(checkpoint: CheckpointId) -> Vec<u8> {
    format!(
        "{MAGIC} checkpoint-len={} checkpoint-fnv1a64={:016x}\n",
        checkpoint.len, checkpoint.hash
    )
    .into_bytes()
}

/// One record's bytes.
pub fn record(seq: u64, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(FRAME + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&hash(seq, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn hash(seq: u64, body: &[u8]) -> u64 {
    // FNV-1a over seq then body, without copying the body.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in seq.to_le_bytes().iter().chain(body) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a journal file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The checkpoint it follows.
    pub checkpoint: CheckpointId,
    /// Each good record's sequence number and body.
    pub records: Vec<(u64, Range<usize>)>,
    /// Where the good records end: the next record goes here.
    pub good_len: usize,
    /// A record cut short at the end, if any (from `good_len` to the end of the file).
    pub torn: bool,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The good record starting at `at`, if there is one: (seq, body range, end).
fn good_record(b: &[u8], at: usize) -> Option<(u64, Range<usize>, usize)> {
    let len = u32_at(b, at)?;
    if u32_at(b, at + 4)? != !len {
        return None;
    }
    let len = usize::try_from(len).ok().filter(|&l| l <= MAX_RECORD)?;
    let seq = u64_at(b, at + 8)?;
    let want = u64_at(b, at + 16)?;
    let body = at + FRAME..(at + FRAME).checked_add(len)?;
    let bytes = b.get(body.clone())?;
    (hash(seq, bytes) == want).then(|| (seq, body.clone(), body.end))
}

/// The checkpoint a header line names, or why the line is not a journal header.
pub fn parse_header(line: &[u8]) -> Result<CheckpointId, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the header is not text".to_owned())?;
    let bad = || {
        format!(
            "header {:?} is not \"{MAGIC} checkpoint-len=… checkpoint-fnv1a64=…\"",
            super::cut(text)
        )
    };
    let rest = text
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(" checkpoint-len="))
        .ok_or_else(bad)?;
    let (len, hash) = rest.split_once(" checkpoint-fnv1a64=").ok_or_else(bad)?;
    let len = len.parse().map_err(|_| bad())?;
    if hash.len() != 16 {
        return Err(bad());
    }
    let hash = u64::from_str_radix(hash, 16).map_err(|_| bad())?;
    Ok(CheckpointId { len, hash })
}

/// The journal in `bytes`, or why it is corrupt (a header that does not parse, records
/// out of sequence, or damage with a good record after it).
pub fn scan(bytes: &[u8]) -> Result<Scan, String> {
    let newline = bytes
        .iter()
        .take(256)
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let checkpoint = parse_header(&bytes[..newline])?;
    let mut at = newline + 1;
    let mut records = Vec::new();
    while at < bytes.len() {
        let Some((seq, body, end)) = good_record(bytes, at) else {
            // Damage: legitimate only if nothing good follows (a crash cut this record).
            if let Some(later) = (at + 1..bytes.len()).find(|&q| good_record(bytes, q).is_some()) {
                return Err(format!(
                    "the record at byte {at} is damaged, yet a good record follows at byte \
                     {later}: this is not a write cut short by a crash"
                ));
            }
            return Ok(Scan {
                checkpoint,
                records,
                good_len: at,
                torn: true,
            });
        };
        let want = records.len() as u64 + 1;
        if seq != want {
            return Err(format!(
                "the record at byte {at} has sequence number {seq}, expected {want}"
            ));
        }
        records.push((seq, body));
        at = end;
    }
    Ok(Scan {
        checkpoint,
        records,
        good_len: at,
        torn: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CK: CheckpointId = CheckpointId {
        len: 10,
        hash: 0xabc,
    };

    fn journal(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = header(CK);
        for (i, b) in bodies.iter().enumerate() {
            out.extend(record(i as u64 + 1, b));
        }
        out
    }

    #[test]
    fn round_trip() {
        let j = journal(&[b"one", b"", b"three"]);
        let s = scan(&j).unwrap();
        assert_eq!(s.checkpoint, CK);
        assert!(!s.torn);
        assert_eq!(s.good_len, j.len());
        let bodies: Vec<&[u8]> = s.records.iter().map(|(_, r)| &j[r.clone()]).collect();
        assert_eq!(bodies, [&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn every_cut_is_a_torn_tail_never_an_error() {
        let j = journal(&[b"{\"a\":1}", b"{\"b\":2}", b"{\"c\":3}"]);
        let head = header(CK).len();
        let ends: Vec<usize> = scan(&j).unwrap().records.iter().map(|r| r.1.end).collect();
        for cut in head..=j.len() {
            let s = scan(&j[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            assert_eq!(s.torn, !ends.contains(&cut) && cut != head, "cut at {cut}");
            // What a crash may leave after the cut: zeros (a size extended before the data).
            let mut zeros = j[..cut].to_vec();
            zeros.resize(j.len(), 0);
            let z = scan(&zeros).unwrap_or_else(|e| panic!("zeros after {cut}: {e}"));
            assert_eq!(z.records.len(), whole, "zeros after {cut}");
        }
    }

    #[test]
    fn damage_before_a_good_record_is_corruption() {
        let j = journal(&[b"{\"a\":1}", b"{\"b\":2}"]);
        let first = scan(&j).unwrap().records[0].1.clone();
        for at in header(CK).len()..first.end {
            let mut bad = j.clone();
            bad[at] ^= 0x01;
            let e = scan(&bad).unwrap_err();
            assert!(e.contains("damaged"), "byte {at}: {e}");
        }
        // Damage in the last record is indistinguishable from a cut: it is dropped.
        let mut last = j.clone();
        let n = last.len() - 1;
        last[n] ^= 0x01;
        let s = scan(&last).unwrap();
        assert_eq!((s.records.len(), s.torn), (1, true));
    }

    #[test]
    fn records_out_of_sequence_and_bad_headers_are_corruption() {
        let mut j = header(CK);
        j.extend(record(1, b"x"));
        j.extend(record(3, b"y"));
        assert!(scan(&j).unwrap_err().contains("sequence number 3"));
        for h in [
            &b""[..],
            b"hello\n",
            b"privlink-journal v1 checkpoint-len=x checkpoint-fnv1a64=0000000000000000\n",
            b"privlink-journal v1 checkpoint-len=1 checkpoint-fnv1a64=00\n",
            b"\xff\xfe\n",
        ] {
            assert!(scan(h).is_err(), "{h:?}");
        }
    }
}
