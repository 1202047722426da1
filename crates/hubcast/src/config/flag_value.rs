//! How each setting's type is read from its flag or `HUBCAST_*` variable
//! and shown as a default in `--help` and README.md: [`Scalar`] for one
//! value, [`FlagValue`] for the shapes a setting takes (one value, an
//! optional one, a list).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::ValueParser;
use clap::{Arg, ArgAction, ArgMatches, ValueEnum};

use super::{BrokerKind, LogFormat, NatsStorage};

/// A type one flag value parses to.
pub(super) trait Scalar: Clone + Send + Sync + 'static {
    /// Clap's own parser for the type.
    fn parser() -> ValueParser;
    /// Fits the flag to the type: a bool's value may be left out.
    fn shape(arg: Arg) -> Arg {
        arg
    }
    /// The value as `--help` shows it.
    fn show(&self) -> String;
}

macro_rules! displayed {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn parser() -> ValueParser {
                clap::value_parser!($t).into()
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
displayed!(u32, u64, usize, String, SocketAddr);

impl Scalar for bool {
    fn parser() -> ValueParser {
        clap::value_parser!(bool)
    }
    // `--web` alone means `--web true`.
    fn shape(arg: Arg) -> Arg {
        arg.num_args(0..=1).default_missing_value("true")
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Scalar for PathBuf {
    fn parser() -> ValueParser {
        clap::value_parser!(PathBuf)
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn parser() -> ValueParser {
                clap::value_parser!($t).into()
            }
            // The name the flag takes, which is also the TOML value.
            fn show(&self) -> String {
                self.to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string())
            }
        }
    )*};
}
named!(LogFormat, BrokerKind, NatsStorage);

/// How a setting's type is read from its flag or variable, and shown as a
/// default.
pub(super) trait FlagValue: Sized {
    /// Adds the parser and how many values the flag takes.
    fn arg(arg: Arg) -> Arg;
    /// The value the flag or variable gave, if any.
    fn take(matches: &ArgMatches, id: &str) -> Option<Self>;
    /// The value as `--help` shows a default; `None`: nothing to show.
    fn show(&self) -> Option<String>;
}

macro_rules! single {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn arg(arg: Arg) -> Arg {
                <$t as Scalar>::shape(arg.value_parser(<$t>::parser()).action(ArgAction::Set))
            }
            fn take(matches: &ArgMatches, id: &str) -> Option<Self> {
                matches.get_one::<$t>(id).cloned()
            }
            fn show(&self) -> Option<String> {
                Some(Scalar::show(self)).filter(|s| !s.is_empty())
            }
        }
    )*};
}
single!(
    u32,
    u64,
    usize,
    bool,
    String,
    SocketAddr,
    PathBuf,
    LogFormat,
    BrokerKind,
    NatsStorage
);

/// A setting that may be unset: the flag gives `Some`.
impl<T: Scalar> FlagValue for Option<T> {
    fn arg(arg: Arg) -> Arg {
        T::shape(arg.value_parser(T::parser()).action(ArgAction::Set))
    }
    fn take(matches: &ArgMatches, id: &str) -> Option<Self> {
        matches.get_one::<T>(id).cloned().map(Some)
    }
    fn show(&self) -> Option<String> {
        self.as_ref().map(Scalar::show)
    }
}

/// A list: the flag repeats, or takes a comma-separated list.
impl<T: Scalar> FlagValue for Vec<T> {
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(T::parser())
            .action(ArgAction::Append)
            .value_delimiter(',')
    }
    fn take(matches: &ArgMatches, id: &str) -> Option<Self> {
        matches
            .get_many::<T>(id)
            .map(|values| values.cloned().collect())
    }
    fn show(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.iter().map(Scalar::show).collect::<Vec<_>>().join(","))
    }
}
