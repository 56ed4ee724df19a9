//! The DAG's `[aws]` section: what only production needs.
//!
//! The export reads two settings itself:
//!
//! | setting | meaning |
//! |---|---|
//! | `region` | the AWS region, for the ARNs of `--iam` (`*` when absent) |
//! | `account_id` | the 12-digit AWS account, for the ARNs and trust condition of `--iam` (`*` when absent) |
//!
//! Every other setting belongs to a task kind, whose settings type names
//! it and reads it ([`KindSettings`]) with an [`AwsSettings`]. A setting a task of the DAG needs and that is missing
//! is an error that names it and the task; the exporter never writes a
//! placeholder. Unknown settings are errors too (no silent typos), with
//! the nearest known name. Every problem is reported, not just the first,
//! in the order the kinds are registered.

use engine::Dag;
use engine::diagnostic::nearest;

/// A kind's `[aws]` settings: the keys they are read from, and how.
pub trait KindSettings: Send + Sync + Sized + 'static {
    /// The `[aws]` keys read.
    const KEYS: &'static [&'static str];

    /// Reads the settings. `first` is the DAG's first task of the kind, if
    /// it has one: a setting such a task needs is then required, and its
    /// absence an error naming the task. `None` after an error.
    fn read(aws: &mut AwsSettings, first: Option<&str>) -> Option<Self>;
}

/// The settings of a kind that reads none.
impl KindSettings for () {
    const KEYS: &'static [&'static str] = &[];

    fn read(_aws: &mut AwsSettings, _first: Option<&str>) -> Option<()> {
        Some(())
    }
}

/// The settings the export reads itself, whatever the DAG's kinds.
pub const COMMON: &[&str] = &["region", "account_id"];

/// The settings every kind shares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Common {
    pub region: Option<String>,
    /// 12 digits.
    pub account_id: Option<String>,
}

/// A reader of the `[aws]` section that gathers every problem it finds.
pub struct AwsSettings<'a> {
    aws: &'a toml::Table,
    errors: Vec<String>,
}

impl<'a> AwsSettings<'a> {
    /// The DAG's `[aws]` section; every key not in `known` is an error.
    pub fn new(dag: &'a Dag, known: &[&str]) -> Self {
        let mut reader = AwsSettings {
            aws: &dag.aws,
            errors: Vec::new(),
        };
        for key in dag.aws.keys() {
            if !known.contains(&key.as_str()) {
                let hint = nearest(key, known.iter().copied())
                    .map(|n| format!("did you mean `{n}`? "))
                    .unwrap_or_default();
                reader.errors.push(format!(
                    "[aws] has an unknown setting `{key}`: {hint}known settings: {}",
                    known.join(", ")
                ));
            }
        }
        reader
    }

    /// `region` and `account_id`.
    pub fn common(&mut self) -> Common {
        let region = self.string("region", None);
        let account_id = self.string("account_id", None).and_then(|a| {
            if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) {
                Some(a)
            } else {
                self.errors.push(format!(
                    "[aws] account_id must be the 12 digits of an AWS account, found {a:?}"
                ));
                None
            }
        });
        Common { region, account_id }
    }

    /// A non-empty string setting. `required` says why it is needed, and
    /// makes its absence an error.
    pub fn string(&mut self, key: &str, required: Option<&str>) -> Option<String> {
        match self.aws.get(key) {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(other) => {
                self.errors.push(format!(
                    "[aws] {key} must be a non-empty string, found {other}"
                ));
                None
            }
            None => {
                if let Some(why) = required {
                    self.errors.push(format!("[aws] {key} is missing: {why}"));
                }
                None
            }
        }
    }

    /// A whole number from `min` to `max`; `required` as for
    /// [`AwsSettings::string`].
    pub fn count(&mut self, key: &str, min: u64, max: u64, required: Option<&str>) -> Option<u64> {
        match self.aws.get(key) {
            Some(toml::Value::Integer(n)) if (min as i64..=max as i64).contains(n) => {
                Some(*n as u64)
            }
            // A `${params.X}` setting arrives as text; accept its number.
            Some(toml::Value::String(s))
                if s.trim()
                    .parse::<u64>()
                    .is_ok_and(|n| (min..=max).contains(&n)) =>
            {
                s.trim().parse().ok()
            }
            Some(other) => {
                self.errors.push(format!(
                    "[aws] {key} must be a whole number from {min} to {max}, found {other}"
                ));
                None
            }
            None => {
                if let Some(why) = required {
                    self.errors.push(format!("[aws] {key} is missing: {why}"));
                }
                None
            }
        }
    }

    /// Reports a problem with a setting that was read.
    pub fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    /// Every problem found, if any.
    pub fn finish(self) -> Result<(), Vec<String>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}
