//! A task kind added the way the README's "Adding a task kind" says: one
//! folder (`notify/`: its config, local backend and Step Functions face)
//! and one registration. The DAG using it validates, runs on the engine,
//! and exports to Step Functions, IAM and CloudFormation.

mod notify;

use std::sync::Arc;

use engine::scheduler::Silent;
use engine::state_dir::StateDir;
use engine::{Engine, Registry, RunOptions, RunStatus};
use exporters::sfn::Document;
use serde_json::Value;

fn registry() -> Registry {
    let mut registry = tasks::registry();
    tasks::register(&mut registry, notify::Notify);
    registry
}

const DAG: &str = r#"
[dag]
name = "notified"

[aws]
region = "eu-west-1"
account_id = "111122223333"

[tasks.prepare]
type = "noop"

[tasks.tell]
type = "notify"
depends_on = ["prepare"]
topic = "pipeline-done"
message = "the run ${run.id} is done"
"#;

fn load(dir: &std::path::Path, text: &str) -> Result<engine::Dag, engine::diagnostic::Diagnostics> {
    let path = dir.join("notified.toml");
    std::fs::write(&path, text).unwrap();
    engine::dag::load(&path, &[], &registry())
}

#[test]
fn the_new_kind_validates_with_its_own_fields() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), DAG).expect("the DAG is valid");
    let err = load(dir.path(), &DAG.replace("message =", "mesage ="))
        .err()
        .expect("a misspelt field is refused")
        .to_string();
    assert!(
        err.contains("unknown field `mesage` in task `tell`"),
        "{err}"
    );
    assert!(err.contains("did you mean `message`?"), "{err}");
    assert!(
        err.contains("a `notify` task accepts: topic, message"),
        "{err}"
    );
    let err = load(dir.path(), &DAG.replace("pipeline-done", "pipeline done"))
        .err()
        .expect("a bad topic is refused")
        .to_string();
    assert!(err.contains("is not an SNS topic name"), "{err}");
}

#[tokio::test]
async fn the_new_kind_runs_on_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let dag = load(dir.path(), DAG).unwrap();
    let engine = Engine::new(registry(), StateDir::new(dir.path().join("state")));
    let (_cancel, cancelled) = tokio::sync::watch::channel(false);
    let outcome = engine
        .run(
            &dag,
            RunOptions {
                max_parallel: 2,
                observer: Arc::new(Silent),
                cancel: cancelled,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    let log = engine
        .state_dir
        .attempt_dir(&outcome.run_id, "tell", 1)
        .join("messages.log");
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        format!("pipeline-done: the run {} is done\n", outcome.run_id)
    );
}

#[test]
fn the_new_kind_exports_its_state_grant_and_resource() {
    let dir = tempfile::tempdir().unwrap();
    // `${run.id}` has no value at export: the message names the execution
    // another way.
    let dag = load(dir.path(), &DAG.replace(" ${run.id}", "")).unwrap();
    let registry = registry();
    let export = |document| {
        let text = exporters::sfn::export(&dag, &registry, document).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let topic = "arn:aws:sns:eu-west-1:111122223333:pipeline-done";

    let machine = export(Document::StateMachine);
    assert_eq!(machine["StartAt"], "prepare");
    assert_eq!(machine["States"]["prepare"]["Next"], "tell");
    let tell = &machine["States"]["tell"];
    assert_eq!(tell["Resource"], "arn:aws:states:::sns:publish");
    assert_eq!(tell["Parameters"]["TopicArn"], topic);
    assert_eq!(tell["Parameters"]["Message"], "the run is done");
    // The engine's retry and failure rules apply to the new kind too.
    assert_eq!(tell["Catch"][0]["Next"], "tell.Failed");
    assert_eq!(machine["States"]["tell.Failed"]["Type"], "Fail");

    let iam = export(Document::Iam);
    let statements = iam["RolePolicy"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{iam}");
    assert_eq!(statements[0]["Action"], serde_json::json!(["sns:Publish"]));
    assert_eq!(statements[0]["Resource"], serde_json::json!([topic]));

    let template = export(Document::CloudFormation);
    let resources = template["Resources"].as_object().unwrap();
    assert_eq!(
        resources["TopicPipelineDone"]["Properties"]["TopicName"],
        "pipeline-done"
    );
    assert_eq!(resources.len(), 3, "{template}");
    // The topic comes after the state machine: a type the listing order
    // does not name comes last.
    let text = exporters::sfn::export(&dag, &registry, Document::CloudFormation).unwrap();
    let at = |id: &str| text.find(&format!("\"{id}\": {{")).unwrap();
    assert!(
        at("StateMachineRole") < at("StateMachine") && at("StateMachine") < at("TopicPipelineDone")
    );
}
