//! `x-request-id`: kept from the client when sane, else minted, by the proxy and both backends alike.

/// The longest `x-request-id` kept from a client; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request-id header's name.
pub const HEADER: &str = "x-request-id";

/// The client's `x-request-id` if it is sane, else a fresh one.
pub fn request_id(header: Option<&[u8]>) -> String {
    match kept(header) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// The client's `x-request-id` if it is sane (visible ASCII, 1 to 128 bytes), i.e. the id
/// `request_id` keeps; `None` when `request_id` would mint one instead.
pub fn kept(header: Option<&[u8]>) -> Option<&str> {
    header
        .filter(|value| {
            !value.is_empty()
                && value.len() <= MAX_REQUEST_ID_LEN
                && value.iter().all(|b| b.is_ascii_graphic())
        })
        .and_then(|value| std::str::from_utf8(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_is_the_id_request_id_keeps() {
        assert_eq!(kept(Some(b"abc-123")), Some("abc-123"));
        for odd in [&b""[..], b"has space", b"caf\xc3\xa9", &[b'a'; 129]] {
            assert_eq!(kept(Some(odd)), None, "{odd:?}");
            assert_ne!(request_id(Some(odd)).as_bytes(), odd);
        }
        assert_eq!(kept(None), None);
        assert_eq!(request_id(Some(&[b'a'; 128])), "a".repeat(128));
    }
}
