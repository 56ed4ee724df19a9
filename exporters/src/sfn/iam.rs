//! `flux-engine export --iam`: the IAM policy of the state machine's
//! execution role and its trust policy, as one JSON document:
//!
//! ```json
//! {"RolePolicy": {"Version": "2012-10-17", "Statement": [...]},
//!  "TrustPolicy": {"Version": "2012-10-17", "Statement": [...]}}
//! ```
//!
//! followed by `NAMERolePolicy` and `NAMETrustPolicy` for each other role
//! a kind's deployment declares (the report Lambda function's,
//! `ReportFunction`).
//!
//! The policies are built from typed [`Grant`]s: each task kind's
//! translation says what its states need (see the kind's `sfn.rs` in the
//! `tasks` crate), a [`super::Session`] what opening and closing it needs.
//! Only what a role itself calls is granted: the Spark jobs run as the
//! EMR roles, whose own policies are the deployment's business.
//!
//! How grants become statements: grants with the same `Sid` are one
//! statement (actions in the order first granted, resources sorted and
//! once each; the condition of the first); [`Permission::List`] grants
//! are one `s3:ListBucket` statement per bucket, numbered in bucket
//! order; [`Permission::ReadData`] grants every data location a task of
//! the DAG declares ([`super::TaskExport::data`]): what queries may read.
//! Statements come in the order they are first granted, kinds taken in
//! the order they are registered, and within a kind its tasks in DAG
//! order, a task's session before the task.
//!
//! ARNs use `[aws] region` and `[aws] account_id`; either missing is `*`
//! (and no `aws:SourceAccount` condition in the trust policy).

use std::collections::{BTreeMap, BTreeSet};

use super::json::{Json, Obj};
use super::settings::Common;

/// Who is granted: the state machine's execution role, or another role a
/// kind's deployment declares (by name, as `ReportFunction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    StateMachine,
    Named(&'static str),
}

/// Something a role needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub role: Role,
    pub permission: Permission,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Permission {
    /// Actions on resources, in the statement `sid`.
    Statement {
        sid: String,
        actions: Vec<String>,
        resources: Vec<String>,
        /// `{"StringEquals": {"key": value}}` and the like.
        condition: Option<Obj>,
    },
    /// `s3:ListBucket` on `bucket` for keys under `prefixes` (patterns of
    /// `s3:prefix`), in the statements `{sid_prefix}1`, `{sid_prefix}2`,
    /// one per bucket.
    List {
        sid_prefix: &'static str,
        bucket: String,
        prefixes: Vec<String>,
    },
    /// `s3:GetObject` (statement `read_sid`) and `s3:ListBucket` (as
    /// [`Permission::List`] with `list_sid_prefix`) on every data location
    /// of the DAG.
    ReadData {
        read_sid: &'static str,
        list_sid_prefix: &'static str,
    },
}

impl Grant {
    /// `actions` on `resources`, for the state machine's role.
    pub fn statement(
        sid: &str,
        actions: &[&str],
        resources: impl IntoIterator<Item = String>,
    ) -> Grant {
        Grant {
            role: Role::StateMachine,
            permission: Permission::Statement {
                sid: sid.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                resources: resources.into_iter().collect(),
                condition: None,
            },
        }
    }

    /// `s3:ListBucket` on `bucket` for `prefixes`, for the state machine's
    /// role.
    pub fn list(sid_prefix: &'static str, bucket: &str, prefixes: Vec<String>) -> Grant {
        Grant {
            role: Role::StateMachine,
            permission: Permission::List {
                sid_prefix,
                bucket: bucket.to_string(),
                prefixes,
            },
        }
    }

    /// Read access to every data location of the DAG.
    pub fn read_data(read_sid: &'static str, list_sid_prefix: &'static str) -> Grant {
        Grant {
            role: Role::StateMachine,
            permission: Permission::ReadData {
                read_sid,
                list_sid_prefix,
            },
        }
    }

    /// The same grant with a condition (`op`: `StringEquals`, ...).
    pub fn when(mut self, op: &str, key: &str, value: impl Into<Json>) -> Grant {
        if let Permission::Statement { condition, .. } = &mut self.permission {
            *condition = Some(condition_of(op, key, value));
        }
        self
    }

    /// The same grant, for another role.
    pub fn to(mut self, role: Role) -> Grant {
        self.role = role;
        self
    }
}

/// A role other than the state machine's that a kind's deployment
/// declares: its trust, and the grants it has whatever the tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSpec {
    /// `ReportFunction`: the documents `ReportFunctionRolePolicy` and
    /// `ReportFunctionTrustPolicy`, the template's resource
    /// `ReportFunctionRole`.
    pub name: &'static str,
    /// The service that assumes it (`lambda.amazonaws.com`).
    pub trusted_service: &'static str,
    /// The template resource's description.
    pub description: String,
    /// The name of its inline policy in the template.
    pub policy_name: String,
    /// Its first statements; the tasks' grants to it follow.
    pub grants: Vec<Grant>,
}

/// Partition, region and account for ARNs (`*` where unknown).
#[derive(Debug, Clone)]
pub struct Arns {
    partition: &'static str,
    region: String,
    account: String,
    known_account: Option<String>,
}

impl Arns {
    pub fn new(common: &Common) -> Self {
        let region = common.region.clone().unwrap_or_else(|| "*".into());
        let partition = if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        Arns {
            partition,
            account: common.account_id.clone().unwrap_or_else(|| "*".into()),
            known_account: common.account_id.clone(),
            region,
        }
    }

    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// A role's ARN from its name (an ARN is kept as it is).
    pub fn role(&self, name: &str) -> String {
        if name.starts_with("arn:") {
            return name.to_string();
        }
        format!("arn:{}:iam::{}:role/{name}", self.partition, self.account)
    }

    /// An S3 object or pattern (`bucket/key*`).
    pub fn s3(&self, bucket_and_key: &str) -> String {
        format!("arn:{}:s3:::{bucket_and_key}", self.partition)
    }

    /// The state machine's trust policy: Step Functions may assume the
    /// role, only for `[aws] account_id` when it is given.
    pub fn trust_policy(&self) -> Json {
        trust_policy_for(self.known_account.as_deref().map(Json::from))
    }
}

/// The places a location in S3 covers, as policy patterns: `s3://b/p/`
/// (key `p/`) is the objects `b/p/*` and the `s3:prefix` `p/*`;
/// `s3://b/p/x` (no `/` at the end) is `b/p/x` and `b/p/x/*`, `p/x` and
/// `p/x/*`.
pub fn s3_places(bucket: &str, key: &str) -> (Vec<String>, Vec<String>) {
    if key.is_empty() || key.ends_with('/') {
        (vec![format!("{bucket}/{key}*")], vec![format!("{key}*")])
    } else {
        (
            vec![format!("{bucket}/{key}"), format!("{bucket}/{key}/*")],
            vec![key.to_string(), format!("{key}/*")],
        )
    }
}

/// A place in S3 a grant covers: a bucket and a key, which is a prefix
/// when it is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
}

/// One statement of a policy being built.
enum Entry {
    Statement {
        sid: String,
        actions: Vec<String>,
        resources: BTreeSet<String>,
        condition: Option<Obj>,
    },
    Lists {
        sid_prefix: &'static str,
        by_bucket: BTreeMap<String, BTreeSet<String>>,
    },
}

/// The policy document of `grants` (see the module doc).
pub fn policy<'g>(
    grants: impl IntoIterator<Item = &'g Grant>,
    data: &[S3Location],
    arns: &Arns,
) -> Json {
    let mut entries: Vec<Entry> = Vec::new();
    for grant in grants {
        match &grant.permission {
            Permission::Statement {
                sid,
                actions,
                resources,
                condition,
            } => add_statement(&mut entries, sid, actions, resources, condition),
            Permission::List {
                sid_prefix,
                bucket,
                prefixes,
            } => add_list(&mut entries, sid_prefix, bucket, prefixes),
            Permission::ReadData {
                read_sid,
                list_sid_prefix,
            } => {
                for S3Location { bucket, key } in data {
                    let (objects, prefixes) = s3_places(bucket, key);
                    let objects: Vec<String> = objects.iter().map(|o| arns.s3(o)).collect();
                    add_statement(
                        &mut entries,
                        read_sid,
                        &["s3:GetObject".to_string()],
                        &objects,
                        &None,
                    );
                    add_list(&mut entries, list_sid_prefix, bucket, &prefixes);
                }
            }
        }
    }
    let mut statements: Vec<Json> = Vec::new();
    for entry in entries {
        match entry {
            Entry::Statement {
                sid,
                actions,
                resources,
                condition,
            } => {
                let mut st = statement(&sid, &actions, resources);
                if let Some(condition) = condition {
                    st.set("Condition", condition);
                }
                statements.push(st.into());
            }
            Entry::Lists {
                sid_prefix,
                by_bucket,
            } => {
                for (i, (bucket, prefixes)) in by_bucket.into_iter().enumerate() {
                    let prefixes: Vec<String> = prefixes.into_iter().collect();
                    statements.push(
                        statement(
                            &format!("{sid_prefix}{}", i + 1),
                            &["s3:ListBucket".to_string()],
                            [arns.s3(&bucket)],
                        )
                        .with(
                            "Condition",
                            condition_of("StringLike", "s3:prefix", prefixes),
                        )
                        .into(),
                    );
                }
            }
        }
    }
    Obj::new()
        .with("Version", "2012-10-17")
        .with("Statement", statements)
        .into()
}

fn add_statement(
    entries: &mut Vec<Entry>,
    sid: &str,
    actions: &[String],
    resources: &[String],
    condition: &Option<Obj>,
) {
    if resources.is_empty() {
        return;
    }
    let found = entries
        .iter_mut()
        .find(|e| matches!(e, Entry::Statement { sid: s, .. } if s == sid));
    match found {
        Some(Entry::Statement {
            actions: have,
            resources: on,
            ..
        }) => {
            for action in actions {
                if !have.contains(action) {
                    have.push(action.clone());
                }
            }
            on.extend(resources.iter().cloned());
        }
        _ => entries.push(Entry::Statement {
            sid: sid.to_string(),
            actions: actions.to_vec(),
            resources: resources.iter().cloned().collect(),
            condition: condition.clone(),
        }),
    }
}

fn add_list(entries: &mut Vec<Entry>, sid_prefix: &'static str, bucket: &str, prefixes: &[String]) {
    let found = entries
        .iter_mut()
        .find(|e| matches!(e, Entry::Lists { sid_prefix: p, .. } if *p == sid_prefix));
    let by_bucket = match found {
        Some(Entry::Lists { by_bucket, .. }) => by_bucket,
        _ => {
            entries.push(Entry::Lists {
                sid_prefix,
                by_bucket: BTreeMap::new(),
            });
            match entries.last_mut() {
                Some(Entry::Lists { by_bucket, .. }) => by_bucket,
                _ => unreachable!("an entry was just pushed"),
            }
        }
    };
    by_bucket
        .entry(bucket.to_string())
        .or_default()
        .extend(prefixes.iter().cloned());
}

fn statement(sid: &str, actions: &[String], resources: impl IntoIterator<Item = String>) -> Obj {
    let resources: BTreeSet<String> = resources.into_iter().collect();
    let resources: Vec<String> = resources.into_iter().collect();
    Obj::new()
        .with("Sid", sid)
        .with("Effect", "Allow")
        .with("Action", actions.to_vec())
        .with("Resource", resources)
}

fn condition_of(op: &str, key: &str, value: impl Into<Json>) -> Obj {
    Obj::new().with(op, Obj::new().with(key, value))
}

/// A role's trust policy: `service` may assume it, only on behalf of
/// `source_account` when one is given.
fn trust(service: &str, source_account: Option<Json>) -> Json {
    let statement = Obj::new()
        .with("Effect", "Allow")
        .with("Principal", Obj::new().with("Service", service))
        .with("Action", "sts:AssumeRole")
        .with_opt(
            "Condition",
            source_account.map(|a| condition_of("StringEquals", "aws:SourceAccount", a)),
        );
    Obj::new()
        .with("Version", "2012-10-17")
        .with("Statement", vec![Json::from(statement)])
        .into()
}

/// The state machine role's trust policy: Step Functions may assume it,
/// only on behalf of `source_account` when one is given (a literal id
/// here, the stack's account in the CloudFormation template).
pub(crate) fn trust_policy_for(source_account: Option<Json>) -> Json {
    trust("states.amazonaws.com", source_account)
}

/// The trust policy of a role a kind declares.
pub(crate) fn role_trust_policy(role: &RoleSpec) -> Json {
    trust(role.trusted_service, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_places_are_prefixes_or_objects() {
        assert_eq!(
            s3_places("b", "p/"),
            (vec!["b/p/*".to_string()], vec!["p/*".to_string()])
        );
        assert_eq!(
            s3_places("b", "p/x.json"),
            (
                vec!["b/p/x.json".to_string(), "b/p/x.json/*".to_string()],
                vec!["p/x.json".to_string(), "p/x.json/*".to_string()]
            )
        );
    }

    #[test]
    fn grants_merge_by_sid_and_lists_are_numbered_by_bucket() {
        let arns = Arns::new(&Common::default());
        let grants = [
            Grant::statement("A", &["x:One"], ["r2".to_string()]),
            Grant::list("List", "zeta", vec!["k/*".into()]),
            Grant::statement("B", &["y:One"], ["r".to_string()]).when("StringEquals", "k", "v"),
            Grant::statement("A", &["x:Two", "x:One"], ["r1".to_string()]),
            Grant::list("List", "alpha", vec!["a/*".into()]),
            Grant::read_data("B", "List"),
        ];
        let data = [S3Location {
            bucket: "alpha".into(),
            key: "d/".into(),
        }];
        let doc = serde_json::to_value(policy(&grants, &data, &arns)).unwrap();
        let st = doc["Statement"].as_array().unwrap();
        let sids: Vec<&str> = st.iter().map(|s| s["Sid"].as_str().unwrap()).collect();
        assert_eq!(sids, ["A", "List1", "List2", "B"]);
        assert_eq!(st[0]["Action"], serde_json::json!(["x:One", "x:Two"]));
        assert_eq!(st[0]["Resource"], serde_json::json!(["r1", "r2"]));
        assert_eq!(st[1]["Resource"][0], "arn:aws:s3:::alpha");
        assert_eq!(
            st[1]["Condition"]["StringLike"]["s3:prefix"],
            serde_json::json!(["a/*", "d/*"])
        );
        assert_eq!(
            st[3]["Action"],
            serde_json::json!(["y:One", "s3:GetObject"])
        );
        assert_eq!(
            st[3]["Resource"],
            serde_json::json!(["arn:aws:s3:::alpha/d/*", "r"])
        );
        assert_eq!(st[3]["Condition"]["StringEquals"]["k"], "v");
    }
}
