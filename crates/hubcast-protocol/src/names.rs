//! The rules for names (PROTOCOL.md section 2, "Rooms"): room names, event
//! types, user ids, client msgIds, and personal rooms (`@user`). Each check
//! returns the message an `error` frame carries.

/// Checks a room name: `^[A-Za-z0-9_.:-]{1,128}$`, or `@` and a user id for
/// a personal room.
pub fn check_room(room: &str) -> Result<(), String> {
    if let Some(user) = room.strip_prefix('@') {
        return check_user(user).map_err(|m| format!("personal room {room:?}: {m}"));
    }
    check_name("room name", room, 128, ", or @user", 140)
}

/// Checks an event type: `^[A-Za-z0-9_.:-]{1,64}$`.
pub fn check_event(event: &str) -> Result<(), String> {
    check_name("event", event, 64, "", 80)
}

/// Checks an `rpc` frame's `method` (the same characters as an event).
pub fn check_method(method: &str) -> Result<(), String> {
    check_name("method", method, 64, "", 80)
}

/// Checks that `name` is 1 to `max` bytes of A-Z a-z 0-9 _ . : -; the error
/// calls it `what`, adds `or` to what is allowed and shows at most `shown`
/// characters of it.
fn check_name(what: &str, name: &str, max: usize, or: &str, shown: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max || !name.bytes().all(name_byte) {
        return Err(format!(
            "invalid {what} {:?}: 1 to {max} characters of A-Z a-z 0-9 _ . : -{or}",
            truncate(name, shown)
        ));
    }
    Ok(())
}

/// Checks a user id: 1 to 128 characters, no control characters.
pub fn check_user(user: &str) -> Result<(), String> {
    let n = user.chars().count();
    if n == 0 || n > 128 || user.chars().any(char::is_control) {
        return Err("a user id is 1 to 128 characters without control characters".into());
    }
    Ok(())
}

/// Whether `c` is a Unicode bidirectional control (U+061C, U+200E, U+200F,
/// U+202A-U+202E, U+2066-U+2069). In a display name one reorders the text
/// shown after it (a name that turns the message beside it around, or
/// passes for someone else's), and no name needs one: the Unicode
/// algorithm orders right-to-left scripts without them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Checks a client-chosen `msgId`: 1 to 128 characters, no control characters.
pub fn check_msg_id(msg_id: &str) -> Result<(), String> {
    let n = msg_id.chars().count();
    if n == 0 || n > 128 || msg_id.chars().any(char::is_control) {
        return Err("field `msgId` must be 1 to 128 characters without control characters".into());
    }
    Ok(())
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// At most `max` characters of `s`, cut on a character boundary: error
/// messages quote the name, and a name may be any length.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether a room is a user's personal room (`@user`).
#[inline]
pub fn is_personal(room: &str) -> bool {
    room.starts_with('@')
}

/// The personal room of a user.
pub fn personal_room(user: &str) -> String {
    format!("@{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(check_room("lobby").is_ok());
        assert!(check_room("a.b:c_d-e").is_ok());
        assert!(check_room(&"x".repeat(128)).is_ok());
        assert!(check_room(&"x".repeat(129)).is_err());
        assert!(check_room("").is_err());
        assert!(check_room("é").is_err());
        assert!(check_room("@bob").is_ok());
        assert!(check_room("@").is_err());
    }

    #[test]
    fn bidi_controls() {
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
        ] {
            assert!(is_bidi_control(c), "{:X}", c as u32);
        }
        // Right-to-left letters and their neighbours are not controls.
        for c in [
            'a', 'א', 'ع', '\u{200D}', '\u{2029}', '\u{202F}', '\u{206A}',
        ] {
            assert!(!is_bidi_control(c), "{:X}", c as u32);
        }
    }
}
