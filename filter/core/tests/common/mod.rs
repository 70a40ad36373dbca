//! Helpers shared by the integration tests.

/// Pushes `bytes` through `push` in pieces ending at each of `cuts` (ascending offsets into
/// `bytes`), then the rest with the end-of-stream flag; returns everything `push` wrote.
/// This is how Envoy hands a body to the filter: in chunks split anywhere.
pub fn push_in_pieces(bytes: &[u8], cuts: &[usize], mut push: impl FnMut(&[u8], bool) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        out.extend(push(&bytes[start..cut], false));
        start = cut;
    }
    out.extend(push(&bytes[start..], true));
    out
}
