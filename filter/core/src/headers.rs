//! A header map read from the host in one call.
//!
//! Every host call that returns data makes the host call back into the module to allocate the
//! answer, which costs about a microsecond in Envoy's V8; reading a phase's headers one by one
//! cost more than the rest of the filter's work on them. So each phase reads its whole map once
//! (`proxy_get_header_map_pairs`) and looks names up here.
//!
//! The host's serialization: a little-endian u32 count, then per pair two u32 sizes (name,
//! value), then each name and each value followed by a NUL byte, in order. Parsed defensively:
//! a malformed buffer yields the pairs read so far, never a panic.

use std::borrow::Cow;
use std::ops::Range;

/// One phase's headers, as the host serialized them.
#[derive(Debug, Default, Clone)]
pub struct HeaderSnapshot {
    bytes: Vec<u8>,
    /// Byte ranges of each pair's name and value in `bytes`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderSnapshot {
    pub fn parse(bytes: Vec<u8>) -> Self {
        let pairs = pair_ranges(&bytes).unwrap_or_default();
        Self { bytes, pairs }
    }

    /// A snapshot of headers a host hands over pair by pair (a native host, a test's fake host).
    /// Sized once up front: growing the buffers pair by pair cost the native host more than a
    /// third of reading its headers (callgrind).
    pub fn from_pairs<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter();
        let (count, size) = pairs.clone().fold((0, 0), |(count, size), (name, value)| {
            (count + 1, size + name.len() + value.len())
        });
        let mut bytes = Vec::with_capacity(size);
        let mut ranges = Vec::with_capacity(count);
        for (name, value) in pairs {
            let name_start = bytes.len();
            bytes.extend_from_slice(name);
            let value_start = bytes.len();
            bytes.extend_from_slice(value);
            ranges.push((name_start..value_start, value_start..bytes.len()));
        }
        Self {
            bytes,
            pairs: ranges,
        }
    }

    /// Names and values as bytes: callers choose them, so they need not be UTF-8.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().filter_map(|(name, value)| {
            Some((
                self.bytes.get(name.clone())?,
                self.bytes.get(value.clone())?,
            ))
        })
    }

    /// The first value of a header; `name` in lower case, as Envoy keeps header names.
    /// Values that are not UTF-8 are decoded lossily.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.raw_value(name).map(String::from_utf8_lossy)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.raw_value(name).is_some()
    }

    fn raw_value(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, value)| value)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

fn pair_ranges(bytes: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let count = read_u32(bytes, 0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for index in 0..count {
        let Some(pair) = pair_at(bytes, index, data) else {
            break;
        };
        data = pair.1.end + 1;
        pairs.push(pair);
    }
    Some(pairs)
}

/// The `index`th pair, whose name starts at `data`; None when it runs past the buffer.
fn pair_at(bytes: &[u8], index: usize, data: usize) -> Option<(Range<usize>, Range<usize>)> {
    let sizes_at = index.checked_mul(8)?.checked_add(4)?;
    let name = data..data.checked_add(read_u32(bytes, sizes_at)?)?;
    let value_start = name.end.checked_add(1)?;
    let value = value_start..value_start.checked_add(read_u32(bytes, sizes_at + 4)?)?;
    // Each value is followed by its NUL.
    (value.end < bytes.len()).then_some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes pairs the way Envoy's proxy-wasm host does.
    fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend((value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend(name.as_bytes());
            out.push(0);
            out.extend(*value);
            out.push(0);
        }
        out
    }

    #[test]
    fn looks_up_names_and_keeps_order() {
        let bytes = serialize(&[
            (":method", b"POST"),
            (":path", b"/v1/chat/completions"),
            ("x-amz-date", b""),
            ("x-a", b"1"),
            ("x-a", b"2"),
        ]);
        let headers = HeaderSnapshot::parse(bytes);
        assert_eq!(headers.get(":method").as_deref(), Some("POST"));
        assert_eq!(
            headers.get(":path").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(headers.get("x-amz-date").as_deref(), Some(""));
        assert_eq!(
            headers.get("x-a").as_deref(),
            Some("1"),
            "the first value wins"
        );
        assert_eq!(headers.get("absent"), None);
        assert!(headers.contains("x-amz-date"));
        assert_eq!(headers.iter().count(), 5);
    }

    #[test]
    fn non_utf8_values_are_decoded_lossily() {
        let headers = HeaderSnapshot::parse(serialize(&[("x-bytes", b"a\xffb")]));
        assert_eq!(headers.get("x-bytes").as_deref(), Some("a\u{fffd}b"));
        assert_eq!(
            headers.iter().next(),
            Some((&b"x-bytes"[..], &b"a\xffb"[..]))
        );
    }

    #[test]
    fn empty_and_malformed_buffers_never_panic() {
        assert_eq!(HeaderSnapshot::parse(Vec::new()).iter().count(), 0);
        assert_eq!(HeaderSnapshot::parse(serialize(&[])).iter().count(), 0);
        let good = serialize(&[("a", b"1"), ("b", b"2")]);
        // Every truncation, and a count larger than the buffer, yields a prefix of the pairs.
        for cut in 0..good.len() {
            let headers = HeaderSnapshot::parse(good[..cut].to_vec());
            assert!(headers.iter().count() <= 1, "cut at {cut}");
        }
        let mut lying = good.clone();
        lying[0] = 200;
        assert_eq!(HeaderSnapshot::parse(lying).iter().count(), 0);
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderSnapshot::parse(huge).iter().count(), 0);
        // A bad second pair keeps the first.
        let mut bad_second = good;
        bad_second[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let headers = HeaderSnapshot::parse(bad_second);
        assert_eq!(headers.iter().count(), 1);
        assert_eq!(headers.get("a").as_deref(), Some("1"));
    }
}
