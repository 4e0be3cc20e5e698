//! Percent-encoding of names in the page's addresses: client names and a
//! snapshot's paths, whose names are bytes (not always UTF-8), so they go
//! into links and come back out byte for byte.

/// `bytes` with everything but unreserved characters (and `/` when
/// `keep_slash`) as `%XX`.
fn encode_with(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name for one segment of an address.
pub fn encode(bytes: &[u8]) -> String {
    encode_with(bytes, false)
}

/// A path (`/`-separated names) for a query value.
pub fn encode_path(bytes: &[u8]) -> String {
    encode_with(bytes, true)
}

/// The bytes `text` encodes (`+` is a space, as forms send it); `None`
/// for a malformed escape.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The value of `key` in a raw query string, decoded.
pub fn query_value(query: Option<&str>, key: &str) -> Option<Vec<u8>> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_come_back(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&bytes)), Some(bytes.clone()));
            prop_assert_eq!(decode(&encode_path(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn a_query_value_is_found_and_decoded() {
        let q = Some("snapshot=3&path=docs%2Fa%20b/%FF&x=1");
        assert_eq!(query_value(q, "path").unwrap(), b"docs/a b/\xff");
        assert_eq!(query_value(q, "nope"), None);
        assert_eq!(decode("%G1"), None);
    }
}
