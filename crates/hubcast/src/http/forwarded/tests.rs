//! The parsers and the walk: what each header form yields, what is
//! refused, and that arbitrary input never panics.

use super::*;
use proptest::prelude::*;

fn trusted(entries: &[&str]) -> TrustedProxies {
    let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    TrustedProxies::parse(&entries).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

const PROXY: &str = "10.0.0.5:40000";

fn client_of(proxies: &[&str], pairs: &[(&str, &str)]) -> String {
    let peer: SocketAddr = PROXY.parse().unwrap();
    trusted(proxies)
        .client(peer, &headers(pairs))
        .ip
        .to_string()
}

#[test]
fn cidr_entries_parse_and_bad_ones_say_why() {
    let t = trusted(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"]);
    for ip in [
        "10.255.0.1",
        "192.168.1.7",
        "fd12::1",
        "::1",
        "::ffff:10.1.1.1",
    ] {
        assert!(t.contains(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["11.0.0.1", "192.168.1.8", "fe80::1", "127.0.0.1"] {
        assert!(!t.contains(ip.parse().unwrap()), "{ip}");
    }
    assert!(trusted(&["0.0.0.0/0"]).contains("8.8.8.8".parse().unwrap()));
    assert!(!trusted(&["0.0.0.0/0"]).contains("2001:db8::1".parse().unwrap()));
    assert!(trusted(&["::/0"]).contains("2001:db8::1".parse().unwrap()));
    for (bad, says) in [
        ("10.0.0.1/8", "bits set past the /8"),
        ("10.0.0.0/33", "0 to 32"),
        ("fd00::/129", "0 to 128"),
        ("10.0.0.0/", "0 to 32"),
        ("proxy.local", "not an IP address"),
        ("", "not an IP address"),
    ] {
        let e = check_entry(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn an_untrusted_peer_is_its_own_client_whatever_it_sends() {
    let h = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ];
    assert_eq!(client_of(&[], &h), "10.0.0.5");
    assert_eq!(client_of(&["10.0.1.0/24"], &h), "10.0.0.5");
    // Loopback is not trusted unless listed.
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let h = headers(&h);
    assert_eq!(trusted(&[]).client(peer, &h).ip.to_string(), "127.0.0.1");
    assert_eq!(
        trusted(&["127.0.0.1"]).client(peer, &h).ip.to_string(),
        "203.0.113.9"
    );
}

#[test]
fn x_forwarded_for_is_walked_from_the_right_past_trusted_hops() {
    let p = &["10.0.0.0/8"];
    assert_eq!(
        client_of(p, &[("x-forwarded-for", "203.0.113.9")]),
        "203.0.113.9"
    );
    // A spoofed left part is never reached.
    let chain = "1.1.1.1, 203.0.113.9, 10.0.0.7";
    assert_eq!(client_of(p, &[("x-forwarded-for", chain)]), "203.0.113.9");
    // Several lines are one list, in order.
    let lines = [
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
    ];
    assert_eq!(client_of(p, &lines), "203.0.113.9");
    // All trusted: the leftmost.
    assert_eq!(
        client_of(p, &[("x-forwarded-for", "10.1.1.1, 10.0.0.7")]),
        "10.1.1.1"
    );
    // Ports, brackets, IPv6, empty entries.
    assert_eq!(
        client_of(p, &[("x-forwarded-for", "203.0.113.9:5555")]),
        "203.0.113.9"
    );
    assert_eq!(
        client_of(p, &[("x-forwarded-for", "[2001:db8::1]:80,")]),
        "2001:db8::1"
    );
    assert_eq!(
        client_of(p, &[("x-forwarded-for", " 2001:db8::1 ")]),
        "2001:db8::1"
    );
    assert_eq!(
        client_of(p, &[("x-forwarded-for", "::ffff:203.0.113.9")]),
        "203.0.113.9"
    );
    // No header: the peer.
    assert_eq!(client_of(p, &[]), "10.0.0.5");
}

#[test]
fn unknown_hops_stop_the_walk_at_the_nearest_trusted_one() {
    let p = &["10.0.0.0/8"];
    let xff = [("x-forwarded-for", "203.0.113.9, unknown, 10.0.0.7")];
    assert_eq!(client_of(p, &xff), "10.0.0.7");
    assert_eq!(client_of(p, &[("x-forwarded-for", "unknown")]), "10.0.0.5");
    assert_eq!(client_of(p, &[("forwarded", "for=_hidden")]), "10.0.0.5");
    // An element without `for` says nothing about the client.
    assert_eq!(client_of(p, &[("forwarded", "proto=https")]), "10.0.0.5");
}

#[test]
fn forwarded_elements_pairs_and_quoting() {
    let p = &["10.0.0.0/8"];
    let cases = [
        ("for=203.0.113.9", "203.0.113.9"),
        (
            "For=\"203.0.113.9:4711\";proto=https;by=10.0.0.5",
            "203.0.113.9",
        ),
        ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
        ("for=\"[2001:db8::17]\"", "2001:db8::17"),
        (
            "for=1.1.1.1, for=203.0.113.9;proto=http, for=10.0.0.7",
            "203.0.113.9",
        ),
        ("proto=http;for=203.0.113.9 ,, for=10.0.0.7", "203.0.113.9"),
        ("for=\"203.0.113.\\9\"", "203.0.113.9"),
        ("for=203.0.113.9:_port", "203.0.113.9"),
    ];
    for (h, want) in cases {
        assert_eq!(client_of(p, &[("forwarded", h)]), want, "{h}");
    }
}

#[test]
fn malformed_headers_fall_back_to_the_peer() {
    let p = &["10.0.0.0/8"];
    for (name, value) in [
        ("x-forwarded-for", "not-an-ip"),
        ("x-forwarded-for", "203.0.113.9, 300.1.1.1"),
        ("x-forwarded-for", "[2001:db8::1"),
        ("x-forwarded-for", "203.0.113.9:99999999"),
        ("forwarded", "for"),
        ("forwarded", "for=\"203.0.113.9"),
        ("forwarded", "for=203.0.113.9 junk"),
        ("forwarded", "for=1.1.1.1;for=2.2.2.2"),
        ("forwarded", "for=example.com"),
        ("forwarded", "=1.1.1.1"),
        ("forwarded", "for=_"),
    ] {
        assert_eq!(
            client_of(p, &[(name, value)]),
            "10.0.0.5",
            "{name}: {value}"
        );
        let peer: SocketAddr = PROXY.parse().unwrap();
        let why = trusted(p)
            .forwarded_client(peer.ip(), &headers(&[(name, value)]))
            .unwrap_err();
        assert!(why.starts_with(name), "{why}");
    }
    // Bytes that are not visible ASCII.
    let mut h = HeaderMap::new();
    h.insert(
        X_FORWARDED_FOR.clone(),
        axum::http::HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
    );
    let peer: SocketAddr = PROXY.parse().unwrap();
    assert_eq!(trusted(p).client(peer, &h).ip, peer.ip());
}

#[test]
fn both_headers_must_agree() {
    let p = &["10.0.0.0/8"];
    // A client's own Forwarded passed on by a proxy that writes X-Forwarded-For.
    let spoof = [
        ("forwarded", "for=1.1.1.1"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    assert_eq!(client_of(p, &spoof), "10.0.0.5");
    let agree = [
        ("forwarded", "for=203.0.113.9"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    assert_eq!(client_of(p, &agree), "203.0.113.9");
}

#[test]
fn display_shows_the_peer_and_the_forwarded_client() {
    let peer: SocketAddr = PROXY.parse().unwrap();
    assert_eq!(ClientAddr::direct(peer).to_string(), "10.0.0.5:40000");
    let via = ClientAddr {
        peer,
        ip: "203.0.113.9".parse().unwrap(),
    };
    assert_eq!(via.to_string(), "203.0.113.9 via 10.0.0.5:40000");
}

proptest! {
    /// Any header text: an answer, never a panic; what comes back is the
    /// peer or an address the text contains.
    #[test]
    fn arbitrary_headers_never_panic(
        fwd in proptest::option::of("[ -~]{0,80}"),
        xff in proptest::option::of("[ -~]{0,80}"),
        raw in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut h = HeaderMap::new();
        if let Some(v) = fwd.as_deref().and_then(|v| v.parse().ok()) {
            h.append(FORWARDED.clone(), v);
        }
        if let Some(v) = xff.as_deref().and_then(|v| v.parse().ok()) {
            h.append(X_FORWARDED_FOR.clone(), v);
        }
        if let Ok(v) = axum::http::HeaderValue::from_bytes(&raw) {
            h.append(X_FORWARDED_FOR.clone(), v);
        }
        let peer: SocketAddr = PROXY.parse().unwrap();
        let got = trusted(&["10.0.0.0/8"]).client(peer, &h);
        prop_assert_eq!(got.peer, peer);
    }

    /// Forwarded-shaped input (the grammar's pieces in any order).
    #[test]
    fn forwarded_shaped_input_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("for="), Just(";"), Just(","), Just("\""), Just("\\"), Just("["),
                Just("]"), Just(":"), Just("1.2.3.4"), Just("::1"), Just("_x"),
                Just("unknown"), Just(" "), Just("proto=http"), Just("10.0.0.1"),
            ],
            0..24,
        ),
    ) {
        let v = parts.concat();
        let mut out = Vec::new();
        let _ = parse_forwarded(&v, &mut out);
        let _ = parse_xff(&v, &mut out);
    }

    /// Entries of `trusted_proxies`: an answer for any text.
    #[test]
    fn cidr_parse_never_panics(s in "[0-9a-f:./]{0,50}") {
        let _ = check_entry(&s);
    }
}
