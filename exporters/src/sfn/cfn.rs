//! `flux-engine export --cfn`: a CloudFormation template (JSON) that
//! deploys the exported state machine with what it needs.
//!
//! The template always holds the state machine (`StateMachine`, its
//! `DefinitionString` the `--sfn` export's text) and its role
//! (`StateMachineRole`, the `--iam` trust policy and role policy inline).
//! The rest comes from the task kinds ([`Deployment`]): parameters for
//! account-specific values (defaulting to the `[aws]` values), the values
//! of the definition and the policies that refer to them, resources (a
//! kind's Glue databases and crawlers, workgroup, report function with its
//! role), outputs, and the buckets the DAG uses, of which the template
//! can create the first (`Bucket`, with the `CreateBucket` parameter).
//!
//! The definition and the policies refer to the parameters through
//! `Fn::Sub`; ARNs are
//! built with `AWS::Partition`, `AWS::Region` and `AWS::AccountId`, so the
//! template names no account. Like every parameter of the DAG, the bucket
//! is fixed at export time.
//!
//! Resources are listed by type, in [`LISTING_ORDER`] (what runs first,
//! then what it uses), a role right before the resource that assumes it;
//! resources that several tasks or kinds name (a Glue database) once, in
//! name order; the others in the order the kinds give them. Parameters
//! are listed in the order of the resources they configure.

use std::collections::BTreeSet;

use super::ExportError;
use super::iam::{self, RoleSpec};

use super::json::{Json, Obj};
use super::model::ExportModel;
use super::settings::Common;

/// Resource types in the order the template lists them; a type not here
/// comes after them.
pub const LISTING_ORDER: &[&str] = &[
    "AWS::StepFunctions::StateMachine",
    "AWS::Lambda::Function",
    "AWS::Glue::Database",
    "AWS::Glue::Crawler",
    "AWS::Athena::WorkGroup",
    "AWS::S3::Bucket",
];

const STATE_MACHINE: &str = "AWS::StepFunctions::StateMachine";
const BUCKET: &str = "AWS::S3::Bucket";

/// What a task kind adds to the template for its tasks of the DAG.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deployment {
    pub parameters: Vec<Parameter>,
    /// Values of the definition that stand for a parameter or resource.
    pub substitutions: Vec<Substitution>,
    /// ARNs of the policies that stand for a parameter or resource.
    pub arn_rewrites: Vec<ArnRewrite>,
    pub resources: Vec<Resource>,
    /// Roles besides the state machine's (also in `--iam`).
    pub roles: Vec<RoleSpec>,
    pub outputs: Vec<(String, Obj)>,
    /// Buckets the DAG uses, and for what.
    pub buckets: Vec<(BucketUse, String)>,
    /// Files of this machine production reads from S3 (scripts, the data
    /// `s3_ingest` verifies): what `flux-engine deploy` uploads.
    pub uploads: Vec<Upload>,
}

/// A local file production expects at an S3 URI.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub local: std::path::PathBuf,
    /// `s3://BUCKET/KEY`.
    pub uri: String,
    /// Input data (uploaded only when asked), rather than code.
    pub data: bool,
}

/// A template parameter standing for an account-specific value.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: &'static str,
    pub description: &'static str,
    /// `None`: the deployer must give it.
    pub default: Option<String>,
    /// The type of the resource it configures, which places it.
    pub configures: &'static str,
}

/// A value of the state machine's definition: wherever `key` holds
/// `value`, the definition holds what `Fn::Sub` resolves to `to` (a `Ref`
/// or `Fn::GetAtt`) instead: `${PARAMETER}`, `${RESOURCE.ATTRIBUTE}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Substitution {
    pub key: &'static str,
    pub value: String,
    pub name: &'static str,
    pub to: Json,
}

/// An ARN of the policies the template rewrites.
#[derive(Debug, Clone, PartialEq)]
pub enum ArnRewrite {
    /// The whole ARN `arn` becomes `to` (a `Ref` to a parameter holding
    /// an ARN, a `Fn::GetAtt`).
    Whole { arn: String, to: Json },
    /// In an ARN of `service`, the resource part `from` becomes `to`
    /// (`role/EMR_DefaultRole` → `role/${EmrServiceRole}`).
    Resource {
        service: &'static str,
        from: String,
        to: String,
    },
}

/// A resource of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Resources several tasks or kinds name are kept once: the first of
    /// a key, placed in `sort_name` order among its type.
    pub key: String,
    pub logical_id: LogicalId,
    /// `{"Type": ..., "Properties": ...}`, where a `{"Ref": KEY}` naming
    /// another resource's key becomes a `Ref` to its logical id.
    pub body: Obj,
    /// Shared resources are listed by this name within their type.
    pub sort_name: Option<String>,
    /// A role of [`Deployment::roles`] (by name) listed right before it
    /// as `NAMERole`.
    pub role: Option<&'static str>,
}

/// A resource's logical id.
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalId {
    Fixed(&'static str),
    /// `prefix` + the alphanumeric characters of `name`, capitalised after
    /// each separator; `2`, `3`, ... appended if taken.
    Derived {
        prefix: &'static str,
        name: String,
    },
}

/// What the DAG uses a bucket for: the template may create the first
/// bucket in this order (its code's, else its results', else its data's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BucketUse {
    Code,
    Results,
    Data,
}

/// A `Ref`.
pub fn reference(name: &str) -> Json {
    Obj::new().with("Ref", name).into()
}

/// A `Fn::GetAtt`.
pub fn get_att(resource: &str, attribute: &str) -> Json {
    Obj::new()
        .with(
            "Fn::GetAtt",
            vec![Json::from(resource), Json::from(attribute)],
        )
        .into()
}

/// The template as pretty-printed JSON, ending with a newline; the same
/// DAG and parameters give the same bytes.
pub fn export(model: &ExportModel) -> Result<String, ExportError> {
    super::to_text(&template(model)?)
}

/// The CloudFormation template as a JSON tree.
pub fn template(model: &ExportModel) -> Result<Json, ExportError> {
    let deployments = model.deployments();
    let dag = model.dag();
    let bucket = bucket_of(deployments);
    let listed = listed_resources(state_machine_resource(model)?, deployments, &bucket);
    let resources = placed_resources(model, listed)?;
    let (parameters, conditions) = parameters(deployments, bucket.is_some());
    let description = format!(
        "The flux-engine DAG {}, exported by flux-engine export --cfn: the Step Functions state machine (its execution input may override the parameters), its role, and the Glue, Athena and S3 resources it uses, for the parameter values at export",
        dag.name
    );
    let mut template = Obj::new()
        .with("AWSTemplateFormatVersion", "2010-09-09")
        .with("Description", description);
    if !parameters.0.is_empty() {
        template.set("Parameters", parameters);
    }
    if !conditions.0.is_empty() {
        template.set("Conditions", conditions);
    }
    template.set("Resources", resources);
    template.set("Outputs", outputs(deployments));
    Ok(template.into())
}

/// The state machine: the `--sfn` export, the kinds' values in it standing
/// for the template's parameters and resources.
fn state_machine_resource(model: &ExportModel) -> Result<Resource, ExportError> {
    let mut machine = model.state_machine()?;
    check_no_placeholders(&machine)?;
    let substitutions: Vec<&Substitution> = model
        .deployments()
        .iter()
        .flat_map(|d| &d.substitutions)
        .collect();
    substitute_definition(&mut machine, &substitutions);
    // `DefinitionString` rather than `Definition`: the same text
    // `--sfn` writes, which tools that only read the string form (moto's
    // CloudFormation among them) deploy as CloudFormation does.
    let text = serde_json::to_string_pretty(&machine)
        .map_err(|e| ExportError(vec![format!("the state machine as JSON: {e}")]))?;
    let definition: Json = if substitutions.is_empty() {
        Json::from(text)
    } else {
        Obj::new().with("Fn::Sub", text).into()
    };
    let properties = Obj::new()
        .with("StateMachineName", model.dag().name.as_str())
        .with("StateMachineType", "STANDARD")
        .with("RoleArn", get_att("StateMachineRole", "Arn"))
        .with("DefinitionString", definition);
    Ok(Resource {
        key: "StateMachine".into(),
        logical_id: LogicalId::Fixed("StateMachine"),
        body: Obj::new()
            .with("Type", STATE_MACHINE)
            .with("Properties", properties),
        sort_name: None,
        role: Some(STATE_MACHINE_ROLE),
    })
}

/// The bucket the template may create: the first the kinds name, by
/// what the DAG uses it for.
pub fn bucket_of(deployments: &[Deployment]) -> Option<String> {
    deployments
        .iter()
        .flat_map(|d| &d.buckets)
        .enumerate()
        .min_by_key(|(i, (used_for, _))| (*used_for, *i))
        .map(|(_, (_, bucket))| bucket.clone())
}

/// Every resource once, in listing order: by type, shared ones by name
/// within their type, the others as the kinds give them.
fn listed_resources(
    state_machine: Resource,
    deployments: &[Deployment],
    bucket: &Option<String>,
) -> Vec<Resource> {
    let mut queue = vec![state_machine];
    queue.extend(deployments.iter().flat_map(|d| d.resources.iter().cloned()));
    queue.extend(bucket.as_deref().map(bucket_resource));
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let mut listed: Vec<(usize, Resource)> = queue
        .into_iter()
        .filter(|r| keys.insert(r.key.clone()))
        .map(|r| (type_rank(&r.body), r))
        .collect();
    listed.sort_by(|(a, ra), (b, rb)| {
        a.cmp(b).then_with(|| match (&ra.sort_name, &rb.sort_name) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        })
    });
    listed.into_iter().map(|(_, r)| r).collect()
}

/// The `Resources` section: each resource under its logical id, a role
/// right before the resource that assumes it, references between
/// resources resolved.
fn placed_resources(model: &ExportModel, listed: Vec<Resource>) -> Result<Obj, ExportError> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut logical: Vec<(String, String)> = Vec::new();
    let mut placed: Vec<(String, Resource)> = Vec::new();
    for resource in listed {
        if let Some(role) = resource.role {
            let id = format!("{role}Role");
            taken.insert(id.clone());
            placed.push((id, role_placeholder(role)));
        }
        let id = match &resource.logical_id {
            LogicalId::Fixed(id) => id.to_string(),
            LogicalId::Derived { prefix, name } => logical_id(prefix, name, &taken),
        };
        taken.insert(id.clone());
        logical.push((resource.key.clone(), id.clone()));
        placed.push((id, resource));
    }
    let mut resources = Obj::new();
    for (id, resource) in placed {
        let body = match resource.key.strip_prefix(ROLE_KEY) {
            Some(name) => role_resource(model, name)?,
            None => resolve_refs(resource.body, &logical),
        };
        resources.set(&id, body);
    }
    Ok(resources)
}

/// The role `name` (the state machine's, or one a kind declares) as an
/// `AWS::IAM::Role` with its policy inline.
fn role_resource(model: &ExportModel, name: &str) -> Result<Json, ExportError> {
    let rewrites: Vec<&ArnRewrite> = model
        .deployments()
        .iter()
        .flat_map(|d| &d.arn_rewrites)
        .collect();
    let policy = sub_policy(model.role_policy(name), model.common(), &rewrites);
    let dag = &model.dag().name;
    if name == STATE_MACHINE_ROLE {
        return Ok(iam_role(
            format!(
                "The execution role of the Step Functions state machine of the flux-engine DAG {dag}"
            ),
            iam::trust_policy_for(Some(reference("AWS::AccountId"))),
            format!("flux-engine-{dag}"),
            policy,
        ));
    }
    let spec = model
        .deployments()
        .iter()
        .flat_map(|d| &d.roles)
        .find(|r| r.name == name)
        .ok_or_else(|| ExportError(vec![format!("no role `{name}` is declared")]))?;
    Ok(iam_role(
        spec.description.clone(),
        iam::role_trust_policy(spec),
        spec.policy_name.clone(),
        policy,
    ))
}

/// The `Parameters` (in the order of the resources they configure, then
/// `CreateBucket`) and `Conditions` sections.
fn parameters(deployments: &[Deployment], has_bucket: bool) -> (Obj, Obj) {
    let mut parameters = Obj::new();
    let mut params: Vec<&Parameter> = deployments.iter().flat_map(|d| &d.parameters).collect();
    params.sort_by_key(|p| rank_of(p.configures));
    for p in params {
        parameters.set(
            p.name,
            Obj::new()
                .with("Type", "String")
                .with("Description", p.description)
                .with_opt("Default", p.default.as_deref()),
        );
    }
    let mut conditions = Obj::new();
    if has_bucket {
        parameters.set(
            "CreateBucket",
            Obj::new()
                .with("Type", "String")
                .with(
                    "Description",
                    "\"true\" creates the bucket the DAG uses; \"false\" (the default) when it exists already",
                )
                .with("AllowedValues", vec![Json::from("true"), Json::from("false")])
                .with("Default", "false"),
        );
        conditions.set(
            "CreateBucket",
            Obj::new().with(
                "Fn::Equals",
                vec![reference("CreateBucket"), Json::from("true")],
            ),
        );
    }
    (parameters, conditions)
}

/// The state machine's and its role's ARNs, then the kinds' outputs.
fn outputs(deployments: &[Deployment]) -> Obj {
    let mut outputs = Obj::new()
        .with(
            "StateMachineArn",
            Obj::new()
                .with("Description", "The state machine to start executions of")
                .with("Value", reference("StateMachine")),
        )
        .with(
            "RoleArn",
            Obj::new()
                .with("Description", "The state machine's execution role")
                .with("Value", get_att("StateMachineRole", "Arn")),
        );
    for (name, output) in deployments.iter().flat_map(|d| &d.outputs) {
        outputs.set(name, output.clone());
    }
    outputs
}

/// The name of the state machine's role among the roles.
const STATE_MACHINE_ROLE: &str = "StateMachine";
/// The key of a role's placeholder resource, before its name.
const ROLE_KEY: &str = "role:";

fn role_placeholder(name: &'static str) -> Resource {
    Resource {
        key: format!("{ROLE_KEY}{name}"),
        logical_id: LogicalId::Fixed(name),
        body: Obj::new(),
        sort_name: None,
        role: None,
    }
}

fn bucket_resource(bucket: &str) -> Resource {
    Resource {
        key: "Bucket".into(),
        logical_id: LogicalId::Fixed("Bucket"),
        body: Obj::new()
            .with("Type", BUCKET)
            .with("Condition", "CreateBucket")
            .with("DeletionPolicy", "Retain")
            .with("UpdateReplacePolicy", "Retain")
            .with(
                "Properties",
                Obj::new().with("BucketName", bucket).with(
                    "PublicAccessBlockConfiguration",
                    Obj::new()
                        .with("BlockPublicAcls", true)
                        .with("BlockPublicPolicy", true)
                        .with("IgnorePublicAcls", true)
                        .with("RestrictPublicBuckets", true),
                ),
            ),
        sort_name: None,
        role: None,
    }
}

fn rank_of(resource_type: &str) -> usize {
    LISTING_ORDER
        .iter()
        .position(|t| *t == resource_type)
        .unwrap_or(LISTING_ORDER.len())
}

fn type_rank(body: &Obj) -> usize {
    match body.get("Type") {
        Some(Json::Str(t)) => rank_of(t),
        _ => LISTING_ORDER.len(),
    }
}

/// `{"Ref": KEY}` where KEY is a resource's key becomes a `Ref` to its
/// logical id.
fn resolve_refs(body: Obj, logical: &[(String, String)]) -> Json {
    fn walk(json: Json, logical: &[(String, String)]) -> Json {
        match json {
            Json::Object(obj) => {
                if let [(k, Json::Str(key))] = obj.0.as_slice()
                    && k == "Ref"
                    && let Some((_, id)) = logical.iter().find(|(rk, _)| rk == key)
                {
                    return reference(id);
                }
                Json::Object(Obj(obj
                    .0
                    .into_iter()
                    .map(|(k, v)| (k, walk(v, logical)))
                    .collect()))
            }
            Json::Array(items) => {
                Json::Array(items.into_iter().map(|v| walk(v, logical)).collect())
            }
            other => other,
        }
    }
    walk(Json::Object(body), logical)
}

/// An `AWS::IAM::Role` with one inline policy.
fn iam_role(description: String, trust: Json, policy_name: String, policy: Json) -> Json {
    Obj::new()
        .with("Type", "AWS::IAM::Role")
        .with(
            "Properties",
            Obj::new()
                .with("Description", description)
                .with("AssumeRolePolicyDocument", trust)
                .with(
                    "Policies",
                    vec![Json::from(
                        Obj::new()
                            .with("PolicyName", policy_name)
                            .with("PolicyDocument", policy),
                    )],
                ),
        )
        .into()
}

/// `prefix` + the alphanumeric characters of `name`, each run after a
/// separator capitalised; `2`, `3`, ... appended if taken.
fn logical_id(prefix: &str, name: &str, taken: &BTreeSet<String>) -> String {
    let mut id = prefix.to_string();
    let mut upper = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    let mut unique = id.clone();
    let mut n = 2;
    while taken.contains(&unique) {
        unique = format!("{id}{n}");
        n += 1;
    }
    unique
}

/// `Fn::Sub` replaces every `${...}` in the definition, so none may come
/// from the DAG itself.
fn check_no_placeholders(machine: &Json) -> Result<(), ExportError> {
    fn walk(json: &Json) -> Option<String> {
        match json {
            Json::Str(s) if s.contains("${") => Some(s.clone()),
            Json::Array(items) => items.iter().find_map(walk),
            Json::Object(obj) => obj.0.iter().find_map(|(k, v)| {
                if k.contains("${") {
                    Some(k.clone())
                } else {
                    walk(v)
                }
            }),
            _ => None,
        }
    }
    match walk(machine) {
        Some(text) => Err(ExportError(vec![format!(
            "the state machine holds `${{` ({text:?}), which CloudFormation's Fn::Sub would replace; export with --sfn and deploy it another way"
        )])),
        None => Ok(()),
    }
}

/// What `Fn::Sub` writes for `to`: `${NAME}` for a `Ref`,
/// `${RESOURCE.ATTRIBUTE}` for a `Fn::GetAtt`.
fn placeholder(sub: &Substitution) -> String {
    if let Json::Object(obj) = &sub.to {
        if let Some(Json::Str(name)) = obj.get("Ref") {
            return name.clone();
        }
        if let Some(Json::Array(parts)) = obj.get("Fn::GetAtt")
            && let [Json::Str(resource), Json::Str(attribute)] = parts.as_slice()
        {
            return format!("{resource}.{attribute}");
        }
    }
    // Every kind gives a Ref or a Fn::GetAtt; a name is what a Ref of
    // the parameter of that name would be.
    sub.name.to_string()
}

/// The kinds' values in the definition become `${NAME}` (`Fn::Sub`).
fn substitute_definition(json: &mut Json, substitutions: &[&Substitution]) {
    match json {
        Json::Array(items) => items
            .iter_mut()
            .for_each(|v| substitute_definition(v, substitutions)),
        Json::Object(obj) => {
            for (k, v) in &mut obj.0 {
                if let Json::Str(s) = v
                    && let Some(sub) = substitutions.iter().find(|x| k == x.key && *s == x.value)
                {
                    *v = Json::from(format!("${{{}}}", placeholder(sub)));
                } else {
                    substitute_definition(v, substitutions);
                }
            }
        }
        _ => {}
    }
}

/// A policy with its ARNs in the stack's partition, region and account,
/// and the account-specific values as parameters.
fn sub_policy(policy: Json, common: &Common, rewrites: &[&ArnRewrite]) -> Json {
    fn walk(json: Json, common: &Common, rewrites: &[&ArnRewrite], in_resource: bool) -> Json {
        match json {
            Json::Str(s) if in_resource => sub_arn(&s, common, rewrites),
            Json::Array(items) => Json::Array(
                items
                    .into_iter()
                    .map(|v| walk(v, common, rewrites, in_resource))
                    .collect(),
            ),
            Json::Object(obj) => Json::Object(Obj(obj
                .0
                .into_iter()
                .map(|(k, v)| {
                    let resource = k == "Resource";
                    (k, walk(v, common, rewrites, resource))
                })
                .collect())),
            other => other,
        }
    }
    walk(policy, common, rewrites, false)
}

fn sub_arn(arn: &str, common: &Common, rewrites: &[&ArnRewrite]) -> Json {
    for rewrite in rewrites {
        if let ArnRewrite::Whole { arn: whole, to } = rewrite
            && whole == arn
        {
            return to.clone();
        }
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Json::from(arn);
    }
    let region = match parts[3] {
        "" => "",
        r if r == "*" || Some(r) == common.region.as_deref() => "${AWS::Region}",
        r => r,
    };
    let account = match parts[4] {
        "" => "",
        a if a == "*" || Some(a) == common.account_id.as_deref() => "${AWS::AccountId}",
        a => a,
    };
    let mut rest = parts[5].to_string();
    for rewrite in rewrites {
        if let ArnRewrite::Resource { service, from, to } = rewrite
            && parts[2] == *service
            && rest == *from
        {
            rest = to.clone();
            break;
        }
    }
    Obj::new()
        .with(
            "Fn::Sub",
            format!(
                "arn:${{AWS::Partition}}:{}:{region}:{account}:{rest}",
                parts[2]
            ),
        )
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_are_alphanumeric_and_unique() {
        let mut taken = BTreeSet::new();
        let first = logical_id("GlueCrawler", "crawl_raw", &taken);
        assert_eq!(first, "GlueCrawlerCrawlRaw");
        taken.insert(first);
        assert_eq!(
            logical_id("GlueCrawler", "crawl-raw", &taken),
            "GlueCrawlerCrawlRaw2"
        );
    }

    #[test]
    fn policy_arns_use_the_stack_and_the_parameters() {
        let common = Common {
            region: Some("eu-west-1".into()),
            account_id: None,
        };
        let rewrites = [
            ArnRewrite::Resource {
                service: "iam",
                from: "role/EMR_DefaultRole".into(),
                to: "role/${EmrServiceRole}".into(),
            },
            ArnRewrite::Resource {
                service: "lambda",
                from: "function:rep".into(),
                to: "function:${ReportFunction}".into(),
            },
        ];
        let rewrites: Vec<&ArnRewrite> = rewrites.iter().collect();
        let sub = |arn: &str| serde_json::to_string(&sub_arn(arn, &common, &rewrites)).unwrap();
        assert_eq!(
            sub("arn:aws:iam::*:role/EMR_DefaultRole"),
            r#"{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${EmrServiceRole}"}"#
        );
        assert_eq!(
            sub("arn:aws:lambda:eu-west-1:*:function:rep"),
            r#"{"Fn::Sub":"arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${ReportFunction}"}"#
        );
        assert_eq!(
            sub("arn:aws:s3:::b/k"),
            r#"{"Fn::Sub":"arn:${AWS::Partition}:s3:::b/k"}"#
        );
        assert_eq!(sub("*"), r#""*""#);
    }
}
