//! How a row of the settings table (`settings.rs`) becomes all a setting
//! needs: the [`Config`] field and its default, the `serve` flag with its
//! `HUBCAST_*` variable and help (default included), the flag layer figment
//! merges over the file, the check naming the key, and a [`Setting`] for
//! tests and docs.
//!
//! Names follow from the key so that they cannot disagree: the flag is the
//! key with dashes (`max-message-bytes`), the variable `HUBCAST_` plus the
//! key in capitals. A row may give another flag (`api_keys` is `--api-key`:
//! one key per use).

use std::ops::RangeInclusive;

use clap::Arg;

pub(super) use super::flag_value::FlagValue;
use super::{Config, ConfigError};

/// Every variable starts with this.
pub(super) const ENV_PREFIX: &str = "HUBCAST_";

/// One setting as people meet it: in `hubcast serve --help` and README.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key, which is also the [`Config`] field.
    pub key: &'static str,
    /// The flag without its leading `--`.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The flag's value placeholder in `--help` (`SECONDS`).
    pub value_name: &'static str,
    /// What the flag does, as `--help` says it, default aside.
    pub help: &'static str,
    /// The default as `--help` shows it; `None` when it has none to show
    /// (an unset secret or file).
    pub default: Option<String>,
    /// `--help` never shows the variable's value (secrets).
    pub secret: bool,
}

impl Setting {
    /// The flag's line in `--help`: what it does, then its default.
    pub(crate) fn help_line(&self) -> String {
        match &self.default {
            Some(default) => format!("{} [default: {default}]", self.help),
            None => self.help.to_string(),
        }
    }

    /// The flag, before its type adds parser and arity ([`FlagValue::arg`]).
    pub(super) fn arg(&self) -> Arg {
        Arg::new(self.key)
            .long(self.flag)
            .env(self.env)
            .value_name(self.value_name)
            .help(self.help_line())
            .hide_env_values(self.secret)
    }
}

/// `max_message_bytes` to `max-message-bytes`. Clap wants `&'static str`
/// names, so they are made at compile time; `N` is the key's length.
pub(super) const fn flag_name<const N: usize>(key: &str) -> [u8; N] {
    let key = key.as_bytes();
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = if key[i] == b'_' { b'-' } else { key[i] };
        i += 1;
    }
    out
}

/// `max_message_bytes` to `HUBCAST_MAX_MESSAGE_BYTES`; `N` is the length
/// of both.
pub(super) const fn env_name<const N: usize>(key: &str) -> [u8; N] {
    let key = key.as_bytes();
    let prefix = ENV_PREFIX.as_bytes();
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < prefix.len() {
            prefix[i]
        } else {
            key[i - prefix.len()].to_ascii_uppercase()
        };
        i += 1;
    }
    out
}

/// A name made by [`flag_name`] or [`env_name`] as text.
pub(super) const fn text(name: &'static [u8]) -> &'static str {
    match std::str::from_utf8(name) {
        Ok(s) => s,
        Err(_) => panic!("setting keys are ASCII"),
    }
}

/// What a check found wrong with a value: the message after the key.
pub(super) type Verdict = Result<(), String>;

/// Runs one setting's check; an error names the key.
pub(super) fn check<T>(
    key: &'static str,
    value: &T,
    config: &Config,
    check: impl Fn(&T, &Config) -> Verdict,
) -> Result<(), ConfigError> {
    check(value, config).map_err(|message| ConfigError::Invalid {
        key: key.into(),
        message,
    })
}

/// The value lies in `range`.
pub(super) fn within<T: PartialOrd>(
    range: RangeInclusive<T>,
    message: &'static str,
) -> impl Fn(&T, &Config) -> Verdict {
    move |value, _| {
        if range.contains(value) {
            Ok(())
        } else {
            Err(message.into())
        }
    }
}

/// The value is `min` or more.
pub(super) fn at_least<T: PartialOrd>(
    min: T,
    message: &'static str,
) -> impl Fn(&T, &Config) -> Verdict {
    move |value, _| {
        if *value >= min {
            Ok(())
        } else {
            Err(message.into())
        }
    }
}

/// A file error inside a `[[rooms]]` or `[[webhooks]]` table (a bad type
/// or value, an unknown or missing key), named `rooms[N].key`; `None` for
/// any other error. Figment counts the tables from 0 in its error paths.
pub(super) fn in_table(e: &figment::Error) -> Option<ConfigError> {
    use figment::error::Kind;
    let [table, index, rest @ ..] = e.path.as_slice() else {
        return None;
    };
    let keys = match table.as_str() {
        "rooms" => super::rooms::KEYS,
        "webhooks" => super::webhooks::KEYS,
        _ => return None,
    };
    let n = index.parse::<usize>().ok()? + 1;
    let (key, message) = match &e.kind {
        Kind::UnknownField(field, _) => (
            field.clone(),
            format!("unknown key; a [[{table}]] table has {keys}"),
        ),
        Kind::MissingField(field) => (field.to_string(), "is required".to_string()),
        kind => (rest.join("."), kind.to_string()),
    };
    let key = if key.is_empty() {
        format!("{table}[{n}]")
    } else {
        format!("{table}[{n}].{key}")
    };
    Some(ConfigError::Invalid { key, message })
}

/// A file value that cannot be read as its key's type, named by the key
/// (a `[[rooms]]` table's as `rooms[N].key`).
pub(super) fn named(key: &str, e: &figment::Error) -> ConfigError {
    // Read on its own, a key's error path is inside it, with the key
    // appended last (figment's `extract_inner`): put it first.
    let mut e = e.clone();
    if e.path.last().map(String::as_str) == Some(key) {
        e.path.pop();
    }
    e.path.insert(0, key.to_string());
    in_table(&e).unwrap_or_else(|| ConfigError::Invalid {
        key: key.into(),
        message: e.kind.to_string(),
    })
}

/// Clap's error without its `error: ` prefix and usage lines.
pub(super) fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

/// Picks a row's optional entry when given, else the fallback after it.
macro_rules! given_or {
    (, $fallback:expr) => {
        $fallback
    };
    ($given:expr, $fallback:expr) => {
        $given
    };
}
pub(super) use given_or;

/// The settings table: each row declares one setting,
///
/// ```text
/// /// Rustdoc for the Config field.
/// key: Type {
///     default: expression,
///     flag: "other-flag",          // optional; else the key with dashes
///     value: "PLACEHOLDER",        // in `--help`: `--key <PLACEHOLDER>`
///     help: "One line for --help", // the default is appended
///     shown: "what unset means",   // optional; else the default's value
///     secret: true,                // optional; hides the variable's value
///     check: |value, config| -> Verdict, // optional
/// }
/// ```
///
/// and becomes [`Config`], its `Default`, `Config::validate` (the checks
/// in row order), `ServeArgs` with its clap impls, and `settings()`.
///
/// After the rows, an optional `file_only { ... }` block declares settings
/// that only the TOML file gives (lists of tables, such as `[[rooms]]`):
/// rows with `default` and `check` only, the check returning the
/// [`ConfigError`] itself so that it can name a key inside the value
/// (`rooms[2].publish`). They are [`Config`] fields, checked after the
/// rows, with no flag, variable, `--help` line or README row.
macro_rules! declare_settings {
    (@setting $defaults:ident, $field:ident, [$($flag:literal)?], $value:literal, $help:literal,
        [$($shown:literal)?], [$($secret:literal)?]) => {{
        use $crate::config::declare as d;
        const KEY: &str = stringify!($field);
        const ENV: [u8; d::ENV_PREFIX.len() + KEY.len()] = d::env_name(KEY);
        $crate::config::Setting {
            key: KEY,
            flag: d::given_or!($($flag)?, {
                const FLAG: [u8; KEY.len()] = d::flag_name(KEY);
                const { d::text(&FLAG) }
            }),
            env: const { d::text(&ENV) },
            value_name: $value,
            help: $help,
            default: d::given_or!(
                $(Some(String::from($shown)))?,
                d::FlagValue::show(&$defaults.$field)
            ),
            secret: d::given_or!($($secret)?, false),
        }
    }};
    ($(
        $(#[doc = $doc:expr])+
        $field:ident: $ty:ty {
            default: $default:expr,
            $(flag: $flag:literal,)?
            value: $value:literal,
            help: $help:literal,
            $(shown: $shown:literal,)?
            $(secret: $secret:literal,)?
            $(check: $check:expr,)?
        }
    )+
    $(file_only {$(
        $(#[doc = $fdoc:expr])+
        $ffield:ident: $fty:ty {
            default: $fdefault:expr,
            check: $fcheck:expr,
        }
    )+})?) => {
        /// The server's settings after all layers are merged and validated.
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
            $($( $(#[doc = $fdoc])+ pub $ffield: $fty, )+)?
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $( $field: $default, )+
                    $($( $ffield: $fdefault, )+)?
                }
            }
        }

        impl Config {
            /// Checks the settings in declaration order; the first bad one
            /// is the error, naming its key.
            pub fn validate(&self) -> Result<(), $crate::config::ConfigError> {
                match self.problems().into_iter().next() {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }

            /// Every setting's check, in declaration order: all that fail.
            pub fn problems(&self) -> Vec<$crate::config::ConfigError> {
                use $crate::config::declare::check;
                let mut bad = Vec::new();
                $($( bad.extend(check(stringify!($field), &self.$field, self, $check).err()); )?)+
                $($( bad.extend(($fcheck)(&self.$ffield, self).err()); )+)?
                bad
            }

            /// Sets each key `file` gives, read on its own so that every
            /// bad one is named in `bad`, not only the first.
            pub(super) fn set_each(
                &mut self,
                file: &figment::Figment,
                bad: &mut Vec<$crate::config::ConfigError>,
            ) {
                $(
                    if file.find_value(stringify!($field)).is_ok() {
                        match file.extract_inner::<$ty>(stringify!($field)) {
                            Ok(v) => self.$field = v,
                            Err(e) => bad.push($crate::config::declare::named(stringify!($field), &e)),
                        }
                    }
                )+
                $($(
                    if file.find_value(stringify!($ffield)).is_ok() {
                        match file.extract_inner::<$fty>(stringify!($ffield)) {
                            Ok(v) => self.$ffield = v,
                            Err(e) => bad.push($crate::config::declare::named(stringify!($ffield), &e)),
                        }
                    }
                )+)?
            }

            /// Sets each setting `args` gives (flags and variables).
            pub(super) fn set_given(&mut self, args: &ServeArgs) {
                $(
                    if let Some(v) = &args.$field {
                        self.$field = v.clone();
                    }
                )+
            }
        }

        /// Every TOML key, the file-only ones included.
        pub(super) const KEYS: &[&str] = &[
            $( stringify!($field), )+
            $($( stringify!($ffield), )+)?
        ];

        /// Every setting in declaration order, as `hubcast serve --help` and
        /// README.md present it.
        pub fn settings() -> Vec<$crate::config::Setting> {
            let defaults = Config::default();
            vec![$(
                declare_settings!(@setting defaults, $field, [$($flag)?], $value, $help,
                    [$($shown)?], [$($secret)?]),
            )+]
        }

        /// `hubcast serve` flags. Every field is optional so that an absent
        /// flag (and absent variable) leaves the file's or the default value
        /// in place; serialized, a figment layer of the given ones.
        #[derive(Debug, Clone, Default, serde::Serialize)]
        pub struct ServeArgs {
            /// TOML file with settings (`--config`, `HUBCAST_CONFIG`).
            #[serde(skip)]
            pub config: Option<::std::path::PathBuf>,
            $(
                #[doc = concat!("`", stringify!($field), "` from its flag or variable, if given.")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )+
        }

        impl clap::Args for ServeArgs {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                use $crate::config::declare::FlagValue;
                let defaults = Config::default();
                cmd.arg(
                    clap::Arg::new("config")
                        .long("config")
                        .env("HUBCAST_CONFIG")
                        .value_name("FILE")
                        .help("TOML file with settings (keys are the flag names with underscores)")
                        .value_parser(clap::value_parser!(::std::path::PathBuf))
                        .action(clap::ArgAction::Set),
                )
                $(
                    .arg(<$ty as FlagValue>::arg(
                        declare_settings!(@setting defaults, $field, [$($flag)?], $value, $help,
                            [$($shown)?], [$($secret)?]).arg(),
                    ))
                )+
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }

        impl ServeArgs {
            /// The `HUBCAST_*` variables, each read on its own by its flag's
            /// parser, so that every bad one is named in `bad`.
            pub(crate) fn from_env_each(bad: &mut Vec<$crate::config::ConfigError>) -> ServeArgs {
                use $crate::config::declare::FlagValue;
                let defaults = Config::default();
                let mut args = ServeArgs::default();
                $(
                    let setting = declare_settings!(@setting defaults, $field, [$($flag)?], $value,
                        $help, [$($shown)?], [$($secret)?]);
                    if std::env::var_os(setting.env).is_some() {
                        let cmd = clap::Command::new("hubcast")
                            .arg(<$ty as FlagValue>::arg(setting.arg()));
                        match cmd.try_get_matches_from(["hubcast"]) {
                            Ok(m) => args.$field = <$ty as FlagValue>::take(&m, stringify!($field)),
                            Err(e) => bad.push($crate::config::ConfigError::Invalid {
                                key: stringify!($field).into(),
                                message: format!(
                                    "{}: {}",
                                    setting.env,
                                    $crate::config::declare::clap_message(&e)
                                ),
                            }),
                        }
                    }
                )+
                args
            }
        }

        impl clap::FromArgMatches for ServeArgs {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let mut args = Self::default();
                args.update_from_arg_matches(matches)?;
                Ok(args)
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                use $crate::config::declare::FlagValue;
                if let Some(path) = matches.get_one::<::std::path::PathBuf>("config") {
                    self.config = Some(path.clone());
                }
                $(
                    if let Some(value) = <$ty as FlagValue>::take(matches, stringify!($field)) {
                        self.$field = Some(value);
                    }
                )+
                Ok(())
            }
        }
    };
}
pub(super) use declare_settings;
