//! `hubcast config init`: a TOML file with every key, its default and its
//! `--help` line as a comment, made from the declarations (`settings.rs`)
//! so that it cannot miss a key or disagree on a default.

use super::{Config, settings};

/// The file `hubcast config init` prints; `hubcast config check` passes it
/// as it is.
pub fn init_file() -> String {
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# hubcast settings: every key with its default. Keys are the flag names\n\
         # with underscores; HUBCAST_<KEY> variables and flags win over this file.\n\
         # Check a file with `hubcast config check --config FILE`.\n",
    );
    for s in settings() {
        out.push('\n');
        out.push_str(&format!("# {}\n", s.help));
        match defaults.get(s.key).and_then(literal) {
            Some(value) => out.push_str(&format!("{} = {value}\n", s.key)),
            None => out.push_str(&format!(
                "# {} = (unset: {})\n",
                s.key,
                s.default.as_deref().unwrap_or("none")
            )),
        }
    }
    // The `[hooks]` table: its set defaults as the declarations serialize
    // them; `url` and `secret` have none.
    out.push_str(
        "\n# [hooks] (PROTOCOL.md section 9): the application's backend; every hook is\n\
         # a POST to url, signed with secret (16+ characters). No url: no hooks.\n\
         [hooks]\n\
         # url = (unset: none)\n\
         # secret = (unset: none)\n",
    );
    if let Some(serde_json::Value::Object(hooks)) = defaults.get("hooks") {
        for (key, value) in hooks {
            if let Some(value) = literal(value) {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
    }
    out.push_str(
        "\n# [[webhooks]] tables (PROTOCOL.md section 10): receivers told what happened,\n\
         # signed like the hooks; none by default. events defaults to all of them.\n\
         # [[webhooks]]\n\
         # url = \"http://127.0.0.1:3000/hubcast/events\"\n\
         # secret = \"at least 16 characters\"\n\
         # events = [\"room.occupied\", \"room.vacated\", \"member.joined\", \"member.left\",\n\
         #           \"user.online\", \"user.offline\", \"message.published\"]\n\
         # rooms = \"**\"\n",
    );
    out.push_str(
        "\n# [[rooms]] tables (PROTOCOL.md section 7): rules for the rooms their `match`\n\
         # pattern matches, the first match winning; none by default.\n\
         # [[rooms]]\n\
         # match = \"news.**\"\n\
         # publish = \"server\"   # members (default), server or hook\n\
         # history_size = 100\n\
         # presence = false\n",
    );
    out
}

/// A default as a TOML value; `None` for an unset one.
fn literal(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null | Value::Object(_) => None,
        // JSON's string escapes are TOML basic-string escapes.
        Value::Bool(_) | Value::Number(_) | Value::String(_) => Some(value.to_string()),
        Value::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(literal).collect();
            Some(format!("[{}]", items?.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServeArgs, check_all};

    #[test]
    fn init_names_every_key_and_parses_back_to_the_defaults() {
        let text = init_file();
        for s in settings() {
            assert!(
                text.contains(&format!("\n{} = ", s.key))
                    || text.contains(&format!("# {} = (unset", s.key)),
                "{}",
                s.key
            );
        }
        let dir = std::env::temp_dir().join(format!("hubcast-init-{}", std::process::id()));
        std::fs::write(&dir, &text).unwrap();
        let read = check_all(Some(&dir), &ServeArgs::default());
        let _ = std::fs::remove_file(&dir);
        assert_eq!(read.map_err(|e| format!("{e:?}")), Ok(Config::default()));
    }
}
