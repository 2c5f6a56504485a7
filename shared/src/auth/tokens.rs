//! HS256 JWTs: minted at login, verified statelessly by either backend.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::error::{ApiError, TokenErrorKind};

/// Tokens longer than this are refused before any decoding; ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of every token this service mints, all of them required on verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub name: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
    /// Not minted by us, but honoured if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
    leeway_seconds: i64,
}

const MISSING: &str = "a bearer token is required";
const INVALID: &str = "the token is invalid";
const EXPIRED: &str = "the token has expired";

fn invalid(reason: &str) -> ApiError {
    tracing::debug!(reason, "token refused");
    ApiError::token(TokenErrorKind::Invalid, INVALID)
}

pub fn missing() -> ApiError {
    ApiError::token(TokenErrorKind::Missing, MISSING)
}

impl Tokens {
    pub fn new(secret: &[u8], config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_seconds.get();
        validation.validate_nbf = true;
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: config.issuer.to_string(),
            audience: config.audience.to_string(),
            ttl_seconds: config.token_ttl_seconds.get() as i64,
            leeway_seconds: config.leeway_seconds.get() as i64,
        }
    }

    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds as u64
    }

    /// The claims a token for this user minted at `now` carries.
    pub fn claims_for(&self, sub: &str, email: &str, name: &str, now: i64) -> Claims {
        Claims {
            sub: sub.to_owned(),
            email: email.to_owned(),
            name: name.to_owned(),
            iat: now,
            exp: now + self.ttl_seconds,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: None,
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// Checks size, header, signature, algorithm and every time and audience claim.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, ApiError> {
        if token.is_empty() {
            return Err(missing());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token is over the size cap"));
        }
        refuse_critical_headers(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => ApiError::token(TokenErrorKind::Expired, EXPIRED),
                _ => invalid(&error.to_string()),
            })?;
        if data.claims.iat > now + self.leeway_seconds {
            return Err(invalid("iat is in the future"));
        }
        Ok(data.claims)
    }
}

/// We understand no JWS extension, so any `crit` header must be refused (RFC 7515 §4.1.11);
/// the JWT crate does not look at it.
fn refuse_critical_headers(token: &str) -> Result<(), ApiError> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| invalid("header is not base64url"))?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| invalid("header is not a JSON object"))?;
    if fields.contains_key("crit") {
        return Err(invalid("unsupported crit header"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[7u8; 32], &AuthConfig::default())
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_minted_token_verifies_and_carries_its_claims() {
        let tokens = tokens();
        let claims = tokens.claims_for("u1", "a@b.co", "Ada", now());
        let token = tokens.sign(&claims).unwrap();
        assert_eq!(tokens.verify(&token, now()).unwrap(), claims);
    }

    #[test]
    fn time_claims_are_checked_with_the_configured_leeway() {
        let tokens = tokens();
        let leeway = AuthConfig::default().leeway_seconds.get() as i64;
        let mut claims = tokens.claims_for("u1", "a@b.co", "Ada", now());
        let code = |claims: &Claims| match tokens.verify(&tokens.sign(claims).unwrap(), now()) {
            Ok(_) => "OK",
            Err(e) => e.code(),
        };
        claims.exp = now() - leeway + 2;
        assert_eq!(code(&claims), "OK", "within the leeway");
        claims.exp = now() - leeway - 1;
        assert_eq!(code(&claims), "TOKEN_EXPIRED");
        claims.exp = now() + 60;
        claims.iat = now() + leeway + 30;
        assert_eq!(code(&claims), "TOKEN_INVALID", "iat in the future");
        claims.iat = now();
        claims.nbf = Some(now() + leeway + 30);
        assert_eq!(code(&claims), "TOKEN_INVALID", "not yet valid");
    }
}
