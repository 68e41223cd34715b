//! Who may see and change what: the console's token, its cookie, the CSRF check of every
//! state-changing request, and the Host check that keeps a loopback console out of reach of a
//! web page that rebinds a DNS name to 127.0.0.1.
//!
//! The token is `FULLSEND_WEB_TOKEN`, or, on a loopback address without one, a random token made
//! at start and printed in the login address. With a configured token every request needs it;
//! with a made-up one, reads on loopback are open (as `fullsend status` is to anyone who can
//! reach Redis) and changes still need it.

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};

/// The name of the cookie that holds the token.
pub const COOKIE_NAME: &str = "fullsend_token";

/// The header that carries the CSRF token on a state-changing request from the page.
pub const CSRF_HEADER: &str = "x-fullsend-csrf";

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// No token, or a wrong one.
    None,
    /// The token in the console's cookie (a browser: CSRF-checked).
    Cookie,
    /// `Authorization: Bearer <token>` (a script: a browser never adds it by itself).
    Bearer,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no valid token.
    Unauthenticated,
    /// 403: the token is good but the request could come from another site.
    Forbidden(String),
    /// 421: a Host that is not this console's (DNS rebinding).
    WrongHost(String),
}

/// The console's access rules.
#[derive(Debug, Clone)]
pub struct Auth {
    token: String,
    /// What the cookie holds: a random id made at start, never the token itself (cookies are
    /// not kept apart by port, so another server on localhost may see it; it is worth nothing
    /// after a restart).
    session: String,
    csrf: String,
    /// Reads need the token too (a configured token, or a non-loopback address).
    pub reads_need_token: bool,
    /// Only loopback names are accepted as Host (the console listens on loopback).
    loopback_only: bool,
}

impl Auth {
    /// Rules for a console on `addr`, with the configured token if any. A non-loopback address
    /// without a token is refused.
    pub fn new(addr: std::net::SocketAddr, configured: Option<String>) -> Result<Auth, String> {
        let loopback = addr.ip().is_loopback();
        let configured = configured
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if !loopback && configured.is_none() {
            return Err(format!(
                "{addr} is not a loopback address: set FULLSEND_WEB_TOKEN (the console then asks for it)"
            ));
        }
        if let Some(t) = &configured {
            if t.len() < 16 {
                return Err("FULLSEND_WEB_TOKEN is shorter than 16 characters".into());
            }
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b))
            {
                return Err("FULLSEND_WEB_TOKEN may hold letters, digits and ._~+/=- only".into());
            }
        }
        Ok(Auth {
            reads_need_token: configured.is_some(),
            token: configured.unwrap_or_else(random_token),
            session: random_token(),
            csrf: random_token(),
            loopback_only: loopback,
        })
    }

    /// The token (for the login address printed at start).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CSRF token the page sends back in [`CSRF_HEADER`].
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// True when `candidate` is the token (compared in constant time).
    pub fn is_token(&self, candidate: &str) -> bool {
        constant_time_eq(candidate.as_bytes(), self.token.as_bytes())
    }

    /// How the request proved itself.
    pub fn proof(&self, headers: &HeaderMap) -> Proof {
        if let Some(bearer) =
            header(headers, AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "))
            && self.is_token(bearer.trim())
        {
            return Proof::Bearer;
        }
        let cookies = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='));
        for (name, value) in cookies {
            if name == COOKIE_NAME && constant_time_eq(value.as_bytes(), self.session.as_bytes()) {
                return Proof::Cookie;
            }
        }
        Proof::None
    }

    /// The Host check, before anything else.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.loopback_only {
            return Ok(());
        }
        let host = header(headers, HOST.as_str()).unwrap_or_default();
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.split(':').next().unwrap_or_default(),
        };
        let loopback = name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            Ok(())
        } else {
            Err(Refusal::WrongHost(format!(
                "Host {host:?} is not this console's loopback address"
            )))
        }
    }

    /// May this request read?
    pub fn check_read(&self, headers: &HeaderMap) -> Result<Proof, Refusal> {
        let proof = self.proof(headers);
        if self.reads_need_token && proof == Proof::None {
            return Err(Refusal::Unauthenticated);
        }
        Ok(proof)
    }

    /// May this request change something? It needs the token and, from a browser (the cookie),
    /// the CSRF token and a same-origin `Origin` when the browser sends one.
    pub fn check_write(&self, headers: &HeaderMap) -> Result<Proof, Refusal> {
        let proof = self.proof(headers);
        match proof {
            Proof::None => Err(Refusal::Unauthenticated),
            Proof::Bearer => Ok(proof),
            Proof::Cookie => {
                let sent = header(headers, CSRF_HEADER).unwrap_or_default();
                if !constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
                    return Err(Refusal::Forbidden(format!(
                        "missing or wrong {CSRF_HEADER} header"
                    )));
                }
                if let Some(origin) = header(headers, ORIGIN.as_str()) {
                    let host = header(headers, HOST.as_str()).unwrap_or_default();
                    let same = origin
                        .strip_prefix("http://")
                        .or_else(|| origin.strip_prefix("https://"))
                        .is_some_and(|o| o == host);
                    if !same {
                        return Err(Refusal::Forbidden(format!(
                            "Origin {origin:?} is not this console"
                        )));
                    }
                }
                Ok(proof)
            }
        }
    }

    /// The `Set-Cookie` value that logs a browser in: the session id (not the token), for as
    /// long as the browser runs.
    pub fn cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/",
            self.session
        )
    }

    /// True when the request offered a token (bearer or `?token=`) that is wrong: a guess,
    /// which the caller slows down.
    pub fn offered_a_wrong_token(&self, headers: &HeaderMap, query_token: Option<&str>) -> bool {
        let bearer = header(headers, AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        [bearer, query_token]
            .into_iter()
            .flatten()
            .any(|t| !self.is_token(t))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// 32 random hex digits (two UUIDv4s' worth of the OS's randomness, 122 bits each).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn a_public_address_needs_a_configured_token() {
        let public: std::net::SocketAddr = "0.0.0.0:8765".parse().expect("addr");
        assert!(Auth::new(public, None).is_err());
        assert!(Auth::new(public, Some("short".into())).is_err());
        assert!(Auth::new(public, Some("a long token; with a space".into())).is_err());
        let trimmed =
            Auth::new(public, Some(" a-long-enough-token-0123\r\n".into())).expect("auth");
        assert!(trimmed.is_token("a-long-enough-token-0123"));
        let auth = Auth::new(public, Some("a-long-enough-token-0123".into())).expect("auth");
        assert!(auth.reads_need_token);
        assert_eq!(
            auth.check_read(&headers(&[])),
            Err(Refusal::Unauthenticated)
        );
        assert!(
            auth.check_host(&headers(&[("host", "console.example:8765")]))
                .is_ok()
        );
    }

    #[test]
    fn writes_need_the_token_and_from_a_browser_the_csrf_token_and_same_origin() {
        let local: std::net::SocketAddr = "127.0.0.1:8765".parse().expect("addr");
        let auth = Auth::new(local, None).expect("auth");
        assert!(!auth.reads_need_token);
        assert_eq!(auth.check_read(&headers(&[])), Ok(Proof::None));
        assert_eq!(
            auth.check_write(&headers(&[])),
            Err(Refusal::Unauthenticated)
        );
        let cookie = format!("other=1; {COOKIE_NAME}={}", auth.session);
        // The token itself in the cookie is not a session.
        let token_cookie = format!("{COOKIE_NAME}={}", auth.token());
        assert_eq!(
            auth.proof(&headers(&[("cookie", &token_cookie)])),
            Proof::None
        );
        assert!(!auth.cookie().contains(auth.token()));
        assert!(matches!(
            auth.check_write(&headers(&[("cookie", &cookie)])),
            Err(Refusal::Forbidden(_))
        ));
        let csrf = auth.csrf().to_string();
        let ok = [
            ("cookie", cookie.as_str()),
            (CSRF_HEADER, csrf.as_str()),
            ("host", "127.0.0.1:8765"),
            ("origin", "http://127.0.0.1:8765"),
        ];
        assert_eq!(auth.check_write(&headers(&ok)), Ok(Proof::Cookie));
        let mut cross = ok;
        cross[3] = ("origin", "http://evil.example");
        assert!(matches!(
            auth.check_write(&headers(&cross)),
            Err(Refusal::Forbidden(_))
        ));
        let bearer = format!("Bearer {}", auth.token());
        assert_eq!(
            auth.check_write(&headers(&[("authorization", &bearer)])),
            Ok(Proof::Bearer)
        );
        assert_eq!(
            auth.check_write(&headers(&[("authorization", "Bearer nope")])),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn a_loopback_console_refuses_a_rebound_host_name() {
        let auth = Auth::new("127.0.0.1:0".parse().expect("addr"), None).expect("auth");
        for ok in [
            "127.0.0.1:8765",
            "localhost:8765",
            "[::1]:8765",
            "localhost",
        ] {
            assert!(auth.check_host(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in ["evil.example", "127.0.0.1.evil.example:80", ""] {
            assert!(
                auth.check_host(&headers(&[("host", bad)])).is_err(),
                "{bad}"
            );
        }
    }
}
