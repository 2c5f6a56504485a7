//! `x-request-id`: kept from the client when sane, else minted, by the proxy and both backends alike.

/// The longest `x-request-id` kept from a client; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request-id header's name.
pub const HEADER: &str = "x-request-id";

/// The client's `x-request-id` if it is sane, else a fresh one.
pub fn request_id(header: Option<&[u8]>) -> String {
    match header {
        Some(value)
            if !value.is_empty()
                && value.len() <= MAX_REQUEST_ID_LEN
                && value.iter().all(|b| b.is_ascii_graphic()) =>
        {
            String::from_utf8_lossy(value).into_owned()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}
