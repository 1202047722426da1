//! README.md's settings table against the declarations (`settings.rs`):
//! each row's keys, flags, variables and default, and a row for every
//! setting, so that neither can change without the other.

use super::{Setting, settings};

const README: &str = include_str!("../../../../README.md");
const HEADER: &str = "| key (TOML) | flag / variable | default | meaning |";

/// The table's rows after the header and the `|---|` line, as cells.
fn table(readme: &str) -> Vec<Vec<String>> {
    let mut lines = readme.lines().skip_while(|line| line.trim() != HEADER);
    assert!(
        lines.next().is_some(),
        "no settings table ({HEADER}) in README.md"
    );
    assert!(lines.next().is_some_and(|l| l.starts_with("|---")));
    lines
        .take_while(|line| line.starts_with('|'))
        .map(cells)
        .collect()
}

/// A row's cells; `\|` is a `|` inside a cell.
fn cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().trim_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' if chars.peek() == Some(&'|') => chars.next().unwrap_or(c),
            '|' => {
                cells.push(String::new());
                continue;
            }
            c => c,
        };
        cells.last_mut().expect("one cell at least").push(c);
    }
    cells.iter().map(|cell| cell.trim().to_string()).collect()
}

/// The words a cell sets in backticks.
fn ticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The words in `cell` that begin with `start` and go on with `more`.
fn words<'a>(cell: &'a str, start: &str, more: fn(char) -> bool) -> Vec<&'a str> {
    cell.match_indices(start)
        .map(|(at, _)| {
            let end = cell[at + start.len()..]
                .find(|c: char| !more(c))
                .map_or(cell.len(), |n| at + start.len() + n);
            &cell[at..end]
        })
        .collect()
}

/// Checks a table against the settings; `Err` says what differs, a line
/// for each difference.
fn check(readme: &str, settings: &[Setting]) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for row in table(readme) {
        let [keys, flags, default, _meaning] = row.as_slice() else {
            errors.push(format!("row without 4 cells: {row:?}"));
            continue;
        };
        let keys = ticked(keys);
        let mut declared = Vec::new();
        for key in &keys {
            let Some(s) = settings.iter().find(|s| s.key == *key) else {
                errors.push(format!("README row for `{key}`, which is no setting"));
                continue;
            };
            if seen.contains(key) {
                errors.push(format!("two README rows for `{key}`"));
            }
            seen.push(s.key);
            declared.push(s);
        }
        let mut want: Vec<String> = declared.iter().map(|s| format!("--{}", s.flag)).collect();
        let mut have: Vec<String> = words(flags, "--", |c| c.is_ascii_lowercase() || c == '-')
            .into_iter()
            .map(String::from)
            .collect();
        want.sort();
        have.sort();
        if want != have {
            errors.push(format!(
                "{keys:?}: README gives flags {have:?}, declared {want:?}"
            ));
        }
        for var in words(flags, "HUBCAST_", |c| c.is_ascii_uppercase() || c == '_') {
            if !declared.iter().any(|s| s.env == var) {
                errors.push(format!(
                    "{keys:?}: README gives variable {var}, not declared"
                ));
            }
        }
        let default = default.replace('`', "");
        for s in &declared {
            let want = s.default.as_deref().unwrap_or("none");
            if default != want {
                errors.push(format!(
                    "`{}`: README gives default {default:?}, --help {want:?}",
                    s.key
                ));
            }
        }
    }
    let missing: Vec<&str> = settings
        .iter()
        .map(|s| s.key)
        .filter(|key| !seen.contains(key))
        .collect();
    if !missing.is_empty() {
        errors.push(format!("settings without a README row: {missing:?}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[test]
fn readme_table_matches_the_declarations() {
    if let Err(e) = check(README, &settings()) {
        panic!("README.md's settings table differs from config/settings.rs:\n{e}");
    }
}

#[test]
fn readme_rule_for_variables_holds() {
    assert!(README.contains("Every variable is `HUBCAST_` plus the key in capitals"));
    for s in settings() {
        assert_eq!(s.env, format!("HUBCAST_{}", s.key.to_uppercase()));
    }
}

#[test]
fn the_check_sees_drift() {
    let table = format!(
        "{HEADER}\n|---|---|---|---|\n\
         | `heartbeat` | `--heartbeat` / `HUBCAST_HEARTBEAT` | `25` | pings |\n\
         | `web` | `--web [true\\|false]` | `true` | pages |\n"
    );
    let declared: Vec<Setting> = settings()
        .into_iter()
        .filter(|s| s.key == "heartbeat" || s.key == "web")
        .collect();
    assert_eq!(check(&table, &declared), Ok(()));
    for (from, to, says) in [
        ("`25`", "`30`", "default \"30\""),
        ("`--heartbeat` /", "`--heart-beat` /", "flags"),
        ("HUBCAST_HEARTBEAT", "HUBCAST_BEAT", "variable HUBCAST_BEAT"),
        ("| `web` |", "| `webs` |", "no setting"),
    ] {
        let e = check(&table.replace(from, to), &declared).unwrap_err();
        assert!(e.contains(says), "{from} -> {to}: {e}");
    }
    let without_web = table.lines().take(3).collect::<Vec<_>>().join("\n");
    let e = check(&without_web, &declared).unwrap_err();
    assert!(
        e.contains("without a README row") && e.contains("web"),
        "{e}"
    );
}
