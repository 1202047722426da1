//! What JSON the server relays verbatim: a client's `data` (and a numeric
//! `id`) goes into envelopes and replies as the bytes it arrived as, so it
//! must be JSON every client can read back. serde_json (the Rust client, and
//! most others) refuses nesting deeper than 128 levels, numbers that
//! overflow an f64 and lone UTF-16 surrogate escapes; serde_json's raw
//! parse, which the server's parser uses, accepts all three. [`check_value`]
//! refuses them before anything is published.
//!
//! It scans the raw text once, without allocating: strings are skipped to
//! their closing quote, and only numbers too long to be certainly finite
//! are parsed.

/// The deepest `data` accepted, counted in nested arrays and objects (`1`
/// is 0 deep, `[1]` 1). It leaves room under serde_json's recursion limit
/// (128) for what a client reads `data` inside: an envelope, in a `history`
/// reply's list or a poll answer.
pub const MAX_DATA_DEPTH: usize = 64;

/// Why a JSON value is not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonRefusal {
    /// Arrays and objects nested deeper than the limit given.
    TooDeep,
    /// A number whose value overflows an f64 (`1e400`, a 400-digit integer).
    NotFinite,
    /// A `\u` escape of a UTF-16 surrogate without its other half.
    LoneSurrogate,
}

impl JsonRefusal {
    /// What is wrong, after the name of what holds it ("field `data` ...").
    pub fn describe(self, max_depth: usize) -> String {
        match self {
            JsonRefusal::TooDeep => format!("is nested deeper than {max_depth} levels"),
            JsonRefusal::NotFinite => "holds a number that is not finite as a 64-bit float".into(),
            JsonRefusal::LoneSurrogate => "holds a lone UTF-16 surrogate escape".into(),
        }
    }
}

/// Checks one JSON value, `text`, that serde_json has already parsed (a
/// `RawValue`): nesting at most `max_depth`, every number finite as an f64,
/// every `\u` surrogate escape paired. On text that is not JSON it answers
/// something, without panicking.
pub fn check_value(text: &str, max_depth: usize) -> Result<(), JsonRefusal> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i = skip_string(b, i + 1)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonRefusal::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while let Some(&c) = b.get(i) {
                    match c {
                        b'0'..=b'9' | b'-' | b'+' | b'.' => {}
                        b'e' | b'E' => exponent = true,
                        _ => break,
                    }
                    i += 1;
                }
                // Number bytes are ASCII, so both ends are char boundaries.
                if exponent || i - start > CERTAINLY_FINITE {
                    check_number(text.get(start..i).unwrap_or(""))?;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Without an exponent, a number this long has at most this many digits:
/// below 1e308, so finite. Only longer numbers and exponents are parsed.
const CERTAINLY_FINITE: usize = 308;

/// Checks a number's text: finite when it parses as an f64.
pub fn check_number(n: &str) -> Result<(), JsonRefusal> {
    if n.len() <= CERTAINLY_FINITE && !n.contains(['e', 'E']) {
        return Ok(());
    }
    // serde_json's own number parser decides, so what passes here is what
    // a serde_json client reads.
    match serde_json::from_str::<f64>(n) {
        Ok(f) if f.is_finite() => Ok(()),
        _ => Err(JsonRefusal::NotFinite),
    }
}

/// Skips a string's contents from `i` (just past its opening quote);
/// returns the index past its closing quote.
fn skip_string(b: &[u8], mut i: usize) -> Result<usize, JsonRefusal> {
    loop {
        i = plain_run(b, i);
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(_) => {
                if b.get(i + 1) == Some(&b'u') {
                    let unit = hex4(b, i + 2);
                    i += 6;
                    match unit {
                        Some(0xD800..=0xDBFF) => {
                            let low = (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
                                .then(|| hex4(b, i + 2))
                                .flatten();
                            if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                return Err(JsonRefusal::LoneSurrogate);
                            }
                            i += 6;
                        }
                        Some(0xDC00..=0xDFFF) => return Err(JsonRefusal::LoneSurrogate),
                        _ => {}
                    }
                } else {
                    i += 2;
                }
            }
            None => return Ok(i),
        }
    }
}

/// The index of the first quote or backslash at or after `i` (or the
/// end): eight bytes at a time, since strings are most of most data.
fn plain_run(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_ne_bytes(word);
        // A zero byte in `w ^ QUOTES` is a quote (the classic has-zero-byte
        // test; it may flag a byte after a real match, never miss one).
        let q = w ^ QUOTES;
        let s = w ^ BACKSLASHES;
        let found = (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s) & HIGHS;
        if found != 0 {
            break;
        }
        i += 8;
    }
    while b.get(i).is_some_and(|&c| c != b'"' && c != b'\\') {
        i += 1;
    }
    i
}

/// The four hex digits at `i`, as a UTF-16 code unit.
fn hex4(b: &[u8], i: usize) -> Option<u16> {
    let digits = b.get(i..i + 4)?;
    let mut n = 0u16;
    for &d in digits {
        n = n << 4 | (d as char).to_digit(16)? as u16;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), JsonRefusal> {
        check_value(text, MAX_DATA_DEPTH)
    }

    fn nested(depth: usize) -> String {
        format!(
            "{}1{}",
            "[".repeat(depth / 2) + &r#"{"a":"#.repeat(depth - depth / 2),
            "}".repeat(depth - depth / 2) + &"]".repeat(depth / 2)
        )
    }

    /// Everything accepted must be what serde_json reads back.
    fn readable(text: &str) {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap_or_else(|e| panic!("{text}: serde_json cannot read it: {e}"));
    }

    #[test]
    fn ordinary_values_pass() {
        for t in [
            "null",
            "true",
            "0",
            "-0.5e-3",
            r#""""#,
            r#""plain text""#,
            r#"{"text":"hi","n":[1,2.5,-3e10],"ok":true,"none":null}"#,
            r#""quote \" backslash \\ slash \/ tab \t é \u00e9 \u0000""#,
            r#"{"[not":"a bracket]{","\"":"\\"}"#,
            "[]",
            "{}",
        ] {
            assert_eq!(check(t), Ok(()), "{t}");
            readable(t);
        }
    }

    #[test]
    fn depth_is_limited_at_the_boundary() {
        let at = nested(MAX_DATA_DEPTH);
        assert_eq!(check(&at), Ok(()));
        readable(&at);
        assert_eq!(
            check(&nested(MAX_DATA_DEPTH + 1)),
            Err(JsonRefusal::TooDeep)
        );
        assert_eq!(check(&nested(200)), Err(JsonRefusal::TooDeep));
        // Siblings do not add up: depth is nesting, not count.
        let wide = format!("[{}1]", "[1],".repeat(500));
        assert_eq!(check(&wide), Ok(()));
        // Brackets inside strings are text.
        let text = format!("\"{}\"", "[".repeat(200));
        assert_eq!(check(&text), Ok(()));
        assert_eq!(check_value("[[1]]", 1), Err(JsonRefusal::TooDeep));
        assert_eq!(check_value("[[1],[2]]", 2), Ok(()));
    }

    #[test]
    fn numbers_must_be_finite() {
        for t in [
            "1e400",
            "-1e400",
            "1E+309",
            "[1,{\"x\":2e999}]",
            "1.8e308",
            "0.001e312",
        ] {
            assert_eq!(check(t), Err(JsonRefusal::NotFinite), "{t}");
        }
        let huge = "9".repeat(400);
        assert_eq!(check(&huge), Err(JsonRefusal::NotFinite));
        assert_eq!(check(&format!("-{huge}")), Err(JsonRefusal::NotFinite));
        assert_eq!(check(&format!("[{huge}.5]")), Err(JsonRefusal::NotFinite));
        // Large but finite, and tiny ones that round to zero, pass.
        let big = "9".repeat(308);
        for t in [
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "1e308",
            "1e-400",
            big.as_str(),
            &format!("1{}", "0".repeat(300)),
            &format!("0.{}1", "0".repeat(400)),
            "18446744073709551616",
        ] {
            assert_eq!(check(t), Ok(()), "{t}");
            readable(t);
        }
    }

    #[test]
    fn surrogate_escapes_must_be_paired() {
        for t in [
            r#""\ud800""#,
            r#""\uDBFF""#,
            r#""\udc00""#,
            r#""a\ud800b""#,
            r#""\ud800\u0041""#,
            r#""\ud800\ud800""#,
            r#""\ud800\n""#,
            r#""\udc00\ud800""#,
            r#"{"\ud800":1}"#,
            r#"["ok","\ud83d"]"#,
        ] {
            assert_eq!(check(t), Err(JsonRefusal::LoneSurrogate), "{t}");
        }
        for t in [
            r#""\ud83d\ude00""#,
            r#""\uD83D\uDE00 and \ud800\udc00""#,
            r#""\\ud800""#,
            r#""\ud7ff\ue000""#,
            "\"😀\"",
        ] {
            assert_eq!(check(t), Ok(()), "{t}");
            readable(t);
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            JsonRefusal::TooDeep.describe(64),
            "is nested deeper than 64 levels"
        );
        assert!(JsonRefusal::NotFinite.describe(64).contains("not finite"));
        assert!(
            JsonRefusal::LoneSurrogate
                .describe(64)
                .contains("surrogate")
        );
    }

    #[test]
    fn text_that_is_not_json_does_not_panic() {
        for t in [
            "\"\\u12",
            "\"\\ud800\\u12",
            "\"abc",
            "\"\\",
            "-",
            "é1e999é",
            "]]]",
        ] {
            let _ = check(t);
        }
    }
}
