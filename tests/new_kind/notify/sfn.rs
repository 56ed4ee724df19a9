//! `notify` in Step Functions: `sns:publish` to the topic, which the
//! template creates; the role may publish to it only.

use exporters::sfn::cfn::{Deployment, LogicalId, Resource};
use exporters::sfn::iam::Grant;
use exporters::sfn::json::Obj;
use exporters::sfn::{StepFunctions, TaskContext, TaskExport};

use super::{Notify, NotifyConfig};

impl StepFunctions for Notify {
    type Settings = ();

    fn translate(
        &self,
        task: &TaskContext,
        config: &NotifyConfig,
        _settings: &(),
    ) -> Result<TaskExport, String> {
        let topic = task.arns().arn("sns", &config.topic);
        let state = task.task_state(
            task.comment(),
            "arn:aws:states:::sns:publish",
            Obj::new()
                .with("TopicArn", topic.as_str())
                .with("Message", config.message.as_str()),
        );
        Ok(TaskExport::task(state).with_grants(vec![Grant::statement(
            "PublishNotifications",
            &["sns:Publish"],
            [topic],
        )]))
    }

    fn deployment(
        &self,
        _settings: &(),
        tasks: &[(&TaskContext, NotifyConfig)],
    ) -> Result<Deployment, String> {
        let mut deployment = Deployment::default();
        for (_, config) in tasks {
            deployment.resources.push(Resource {
                key: format!("sns-topic:{}", config.topic),
                logical_id: LogicalId::Derived {
                    prefix: "Topic",
                    name: config.topic.clone(),
                },
                body: Obj::new().with("Type", "AWS::SNS::Topic").with(
                    "Properties",
                    Obj::new().with("TopicName", config.topic.as_str()),
                ),
                sort_name: None,
                role: None,
            });
        }
        Ok(deployment)
    }
}
