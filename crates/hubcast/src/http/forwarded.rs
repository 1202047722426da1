//! The client's address behind a proxy: `trusted_proxies` (CIDRs) and the
//! `Forwarded` (RFC 7239) / `X-Forwarded-For` headers.
//!
//! A request whose peer is in `trusted_proxies` names its client in those
//! headers; walking the hops from the right (the nearest proxy's entry
//! last), past every trusted address, the first untrusted one is the
//! client. Every per-address rule (connection caps, handshake rate, the
//! API's loopback check) and the logs use that address.
//!
//! Invariants:
//! - An untrusted peer's headers are never read: it is its own client.
//! - A header that cannot be read, or two headers that name different
//!   clients, never fail the request: the peer's address is used, the
//!   event counted (`hubcast_forwarded_malformed_total`), and the first
//!   one logged.
//! - `unknown` and obfuscated hops (`_hidden`) end the walk at the nearest
//!   trusted hop to their right: nothing left of them can be believed.
//! - Loopback is not implicitly trusted: a proxy on the same host is
//!   listed like any other (`127.0.0.1/32`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName};

use crate::metrics::FORWARDED_MALFORMED as MALFORMED;

/// Who sent a request: the socket's peer, and the client's address as the
/// trusted proxies name it (the peer's own address when there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientAddr {
    /// The TCP peer (a proxy, or the client itself).
    pub peer: SocketAddr,
    /// The client's address: what per-address limits and rules key on.
    pub ip: IpAddr,
}

impl ClientAddr {
    /// A client connected directly.
    pub(crate) fn direct(peer: SocketAddr) -> ClientAddr {
        ClientAddr {
            peer,
            ip: peer.ip().to_canonical(),
        }
    }
}

impl fmt::Display for ClientAddr {
    /// The peer's `ip:port` when it is the client, else `client via peer`,
    /// so a log line shows both.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ip == self.peer.ip().to_canonical() {
            write!(f, "{}", self.peer)
        } else {
            write!(f, "{} via {}", self.ip, self.peer)
        }
    }
}

/// One `trusted_proxies` entry: an address block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    /// The block's first address, IPv4 as IPv4-mapped IPv6.
    base: u128,
    /// Leading bits that must match (IPv4's prefix plus 96).
    bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`, `::1`).
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?}: not an IP address or CIDR block (10.0.0.0/8, fd00::/8)")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        let bits = if ip.is_ipv4() { len + 96 } else { len };
        let base = wide(ip);
        if base & !mask(bits) != 0 {
            return Err(format!(
                "{s:?}: has bits set past the /{len} prefix (write the block's first address)"
            ));
        }
        Ok(Cidr { base, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        wide(ip) & mask(self.bits) == self.base
    }
}

/// An address as 128 bits, IPv4 (and IPv4-mapped IPv6) as IPv4-mapped.
fn wide(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The leading `bits` bits set.
fn mask(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)
}

/// Checks one `trusted_proxies` entry (the settings' check).
pub(crate) fn check_entry(s: &str) -> Result<(), String> {
    Cidr::parse(s).map(drop)
}

/// The proxies whose forwarding headers are believed; none by default.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// From the `trusted_proxies` entries; the first bad one is the error.
    pub(crate) fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| Cidr::parse(e))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request from `peer` with `headers`.
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        let direct = ClientAddr::direct(peer);
        if !self.contains(direct.ip) {
            return direct;
        }
        match self.forwarded_client(direct.ip, headers) {
            Ok(ip) => ClientAddr { peer, ip },
            Err(why) => {
                malformed(peer, &why);
                direct
            }
        }
    }

    /// The client the headers of a trusted peer name (`peer` without any).
    fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, String> {
        let forwarded = hops(headers, &FORWARDED, parse_forwarded)?;
        let xff = hops(headers, &X_FORWARDED_FOR, parse_xff)?;
        let by_forwarded = forwarded.map(|h| self.walk(peer, &h));
        let by_xff = xff.map(|h| self.walk(peer, &h));
        match (by_forwarded, by_xff) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "Forwarded names {a} and X-Forwarded-For {b}; one was sent by the client"
            )),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Ok(peer),
        }
    }

    /// From the right, past trusted addresses: the first untrusted one; at
    /// an unknown hop, or when all are trusted, the last one walked past.
    fn walk(&self, peer: IpAddr, hops: &[Hop]) -> IpAddr {
        let mut client = peer;
        for hop in hops.iter().rev() {
            match *hop {
                Hop::Unknown => break,
                Hop::Ip(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
            }
        }
        client
    }
}

static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Counts a header a trusted proxy passed that could not be used; logs the
/// first (a proxy that sends them sends them on every request).
fn malformed(peer: SocketAddr, why: &str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    metrics::counter!(MALFORMED).increment(1);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            reason = why,
            "forwarding header from a trusted proxy ignored, the proxy's address used (logged once, counted in {MALFORMED})"
        );
    }
}

/// One hop of a forwarding header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    Ip(IpAddr),
    /// `unknown`, an obfuscated name, or an element without `for`.
    Unknown,
}

/// The hops of every `name` header line, in order; `None` without one.
fn hops(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: fn(&str, &mut Vec<Hop>) -> Result<(), String>,
) -> Result<Option<Vec<Hop>>, String> {
    let mut out = Vec::new();
    let mut any = false;
    for value in headers.get_all(name) {
        any = true;
        let value = value
            .to_str()
            .map_err(|_| format!("{name}: not visible ASCII"))?;
        parse(value, &mut out).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(any.then_some(out))
}

/// `X-Forwarded-For: client, proxy1, proxy2`: addresses (a port or IPv6
/// brackets allowed) or `unknown`; empty entries are skipped.
fn parse_xff(value: &str, out: &mut Vec<Hop>) -> Result<(), String> {
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        out.push(node(entry).ok_or_else(|| format!("{:?} is not an address", clip(entry)))?);
    }
    Ok(())
}

/// `Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"`
/// (RFC 7239 section 4): elements separated by commas, pairs by
/// semicolons, values tokens or quoted strings; each element's `for` is
/// its hop. Empty elements are skipped.
fn parse_forwarded(value: &str, out: &mut Vec<Hop>) -> Result<(), String> {
    let mut rest = value.as_bytes();
    // One element per turn: its pairs up to a comma or the end.
    loop {
        let mut hop: Option<Hop> = None;
        let mut empty = true;
        loop {
            rest = skip_space(rest);
            if matches!(rest.first(), None | Some(b',')) {
                break;
            }
            if rest.first() == Some(&b';') {
                rest = &rest[1..];
                continue;
            }
            let (key, after) = take_token(rest);
            if key.is_empty() || after.first() != Some(&b'=') {
                return Err("expected key=value pairs".into());
            }
            let (val, after) = take_value(&after[1..])?;
            rest = after;
            empty = false;
            if key.eq_ignore_ascii_case(b"for") {
                if hop.is_some() {
                    return Err("two \"for\" in one element".into());
                }
                hop = Some(node(&val).ok_or_else(|| {
                    format!("for={:?} is not a node (RFC 7239 section 6)", clip(&val))
                })?);
            }
            rest = skip_space(rest);
            if !matches!(rest.first(), None | Some(b',' | b';')) {
                return Err("expected ; or , after a value".into());
            }
        }
        if !empty {
            out.push(hop.unwrap_or(Hop::Unknown));
        }
        match rest.split_first() {
            Some((b',', after)) => rest = after,
            _ => return Ok(()),
        }
    }
}

fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

/// RFC 9110 `tchar`, plus `:` `[` `]`, which proxies write unquoted in
/// addresses with ports although the RFC asks for quotes.
fn value_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:[]".contains(&b)
}

fn take_token(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|b| value_char(**b)).count();
    s.split_at(n)
}

/// A token or a quoted string (with `\` escapes), as text.
fn take_value(s: &[u8]) -> Result<(String, &[u8]), String> {
    let Some(quoted) = s.strip_prefix(b"\"") else {
        let (tok, rest) = take_token(s);
        return Ok((String::from_utf8_lossy(tok).into_owned(), rest));
    };
    let mut val = Vec::new();
    let mut i = 0;
    while i < quoted.len() {
        match quoted[i] {
            b'"' => return Ok((String::from_utf8_lossy(&val).into_owned(), &quoted[i + 1..])),
            b'\\' if i + 1 < quoted.len() => {
                val.push(quoted[i + 1]);
                i += 2;
            }
            b => {
                val.push(b);
                i += 1;
            }
        }
    }
    Err("unterminated quoted string".into())
}

/// An address with an optional port (`1.2.3.4`, `1.2.3.4:80`, `::1`,
/// `[::1]`, `[::1]:80`), `unknown`, or an obfuscated name (`_abc`, RFC
/// 7239 section 6.3); `None` for anything else.
fn node(s: &str) -> Option<Hop> {
    if s.eq_ignore_ascii_case("unknown") {
        return Some(Hop::Unknown);
    }
    if let Some(name) = s.strip_prefix('_') {
        let (name, port) = name.split_once(':').unwrap_or((name, "0"));
        return (!name.is_empty() && name.bytes().all(obf_char) && port_ok(port))
            .then_some(Hop::Unknown);
    }
    if let Some(v6) = s.strip_prefix('[') {
        let (addr, rest) = v6.split_once(']')?;
        let port_fine = rest.is_empty() || rest.strip_prefix(':').is_some_and(port_ok);
        let ip: Ipv6Addr = addr.parse().ok()?;
        return port_fine.then_some(Hop::Ip(IpAddr::V6(ip).to_canonical()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(Hop::Ip(ip.to_canonical()));
    }
    let (addr, port) = s.split_once(':')?;
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    port_ok(port).then_some(Hop::Ip(IpAddr::V4(ip)))
}

fn obf_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A port: up to 5 digits, or obfuscated (`_abc`).
fn port_ok(p: &str) -> bool {
    match p.strip_prefix('_') {
        Some(obf) => !obf.is_empty() && obf.bytes().all(obf_char),
        None => (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// At most 64 characters of what a client sent, for a message.
fn clip(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests;
